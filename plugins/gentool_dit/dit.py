"""The diffusion transformer (DiT) of Peebles and Xie (2023), and its factory ``dit``.

Layout (sec. 3.2, Fig. 3): *patchify* cuts ``x_t`` into ``p x p`` patches and
embeds each linearly as a token of width ``hidden_size``, plus a position
embedding; ``depth`` transformer blocks follow, each conditioned by adaLN-Zero
on ``c``, the timestep embedding plus the conditioner's embedding; a final
adaptive LayerNorm and a linear decoder map each token back to a ``p x p``
patch of the output channels, and *unpatchify* puts the patches in place.

adaLN-Zero: a block's LayerNorms have no parameters of their own; an MLP of
``c`` regresses a shift beta and a scale gamma for each, and a gate alpha
applied just before each residual connection. That MLP and the final layer
are zero-initialised, so every block starts as the identity and the network's
initial output is zero.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + gamma) + beta`` per token, the scale written around 1 so that zero is the identity."""
    return x * (1 + scale[:, None]) + shift[:, None]


def patchify(x: Tensor, p: int) -> Tensor:
    """``[B, C, H, W]`` to tokens ``[B, (H/p)(W/p), p*p*C]``: patches in row-major order, each as ``(row, col, channel)``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: Tensor, p: int, h: int, w: int) -> Tensor:
    """The inverse of :func:`patchify`: tokens ``[B, h*w, p*p*C]`` of an ``h x w`` grid to ``[B, C, h*p, w*p]``."""
    b, c = tokens.shape[0], tokens.shape[2] // (p * p)
    x = tokens.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, h * p, w * p)


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """``[len(pos), dim]``: ``sin(pos * w_i)`` then ``cos(pos * w_i)``, ``w_i = 10000 ** (-i / (dim / 2))``."""
    omega = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = pos.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D position embedding of a ``grid x grid`` token grid, float32 ``[grid * grid, dim]``.

    The frequency-based sine-cosine embedding of ViT and MAE that DiT uses:
    the first half of the channels encodes a token's column, the second half
    its row, in the order of MAE's ``get_2d_sincos_pos_embed``. ``dim`` must
    divide by 4.
    """
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=1)
    return emb.to(torch.float32)


class TimestepEmbedder(nn.Module):
    """``t [B] -> [B, hidden_size]``: a sinusoidal embedding of ``t`` followed by a two-layer SiLU MLP.

    ``t`` may be int or float with any real values: gentool's 0-based
    timesteps, or a continuous process's noise label (``1000 t``, ``ln(sigma) / 4``).

    Args:
        hidden_size: width of the output (the transformer's width).
        frequency_embedding_size: width of the sinusoidal embedding (256 in DiT).
        max_period: the longest wavelength of the sinusoids.
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.frequency_embedding_size, self.max_period = frequency_embedding_size, max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))

    def frequency_embedding(self, t: Tensor) -> Tensor:
        """float32 ``[B, frequency_embedding_size]``: ``cos(t f_i)`` then ``sin(t f_i)``, ``f_i = max_period ** (-i / half)``."""
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        # float32 even under autocast: bf16 cannot hold t * f_0 = t exactly for t > 256.
        args = t.to(torch.float32)[:, None] * freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # cos first, as DiT's TimestepEmbedder

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.frequency_embedding(t).to(self.mlp[0].weight.dtype))


class Attention(nn.Module):
    """Multi-head self-attention over the tokens, through ``F.scaled_dot_product_attention``.

    Args:
        hidden_size: token width; must divide by ``num_heads``.
        num_heads: attention heads, each of width ``hidden_size / num_heads``.
    """

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, d / heads]
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    """A transformer block with adaLN-Zero conditioning (Fig. 3, right).

    ``x + alpha1 * Attention(adaLN(x; gamma1, beta1))``, then
    ``x + alpha2 * MLP(adaLN(x; gamma2, beta2))``; the six vectors are
    regressed from ``c`` by a zero-initialised SiLU-linear layer.

    Args:
        hidden_size: token width.
        num_heads: attention heads; must divide ``hidden_size``.
        mlp_ratio: the MLP's hidden width as a multiple of ``hidden_size``.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_hidden, hidden_size))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        beta1, gamma1, alpha1, beta2, gamma2, alpha2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + alpha1[:, None] * self.attn(modulate(self.norm1(x), beta1, gamma1))
        return x + alpha2[:, None] * self.mlp(modulate(self.norm2(x), beta2, gamma2))


class FinalLayer(nn.Module):
    """adaLN (shift and scale from ``c``, no gate), then a linear decoder of each token to a ``p x p`` patch.

    Args:
        hidden_size: token width.
        patch_size: side p of the patch each token decodes to.
        out_channels: channels of the decoded patch.
    """

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        beta, gamma = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), beta, gamma))


class DiT(nn.Module):
    """The DiT denoiser: ``net(x_t, t, cond=None)`` of ``x_t``'s shape and dtype (2C channels with a learned variance).

    Build it with :func:`dit`, which resolves the named size and validates the
    options; the arguments here are the resolved ones, with ``cond_dim`` the
    width of the accepted conditioning embedding (``hidden_size``, or ``None``:
    unconditional) and ``pos_embed`` ``"sincos"`` (a fixed buffer) or
    ``"learned"`` (a parameter).
    """

    def __init__(self, *, in_channels: int, out_channels: int, image_size: int, patch_size: int, depth: int,
                 hidden_size: int, num_heads: int, mlp_ratio: float, pos_embed: str, cond_dim: int | None,
                 learned_variance: bool = False) -> None:
        super().__init__()
        self.learned_variance = learned_variance  # out_channels = 2C: the prediction, then v (gentool.vlb)
        self.cond_dim = cond_dim
        self.patch_size, self.grid = patch_size, image_size // patch_size
        self.patch_embed = nn.Linear(patch_size * patch_size * in_channels, hidden_size)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.grid**2, hidden_size))
        else:  # fixed: rebuilt from the options, so not saved in checkpoints
            self.register_buffer("pos_embed", sincos_2d(hidden_size, self.grid)[None], persistent=False)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, out_channels)
        self.initialize_weights(pos_embed == "learned")

    def initialize_weights(self, learned_pos_embed: bool) -> None:
        """DiT's initialisation: Xavier-uniform linear layers, N(0, 0.02) for the timestep MLP, zero adaLN and output."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if learned_pos_embed:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)  # as ViT's learned position embedding
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in [*self.blocks, self.final_layer]:  # the "Zero" of adaLN-Zero: gates, shifts and scales start at 0
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def embed(self, t: Tensor, cond: Tensor | None) -> Tensor:
        """``c``, what every block's adaLN-Zero sees: the timestep embedding plus the conditioner's embedding."""
        c = self.t_embedder(t)
        if cond is not None:
            if self.cond_dim is None:
                raise ValueError("cond was given but this DiT is unconditional (class_cond=False)")
            c = c + cond.to(c.dtype)
        return c

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Predict the ``[objective]``'s target from ``x_t`` ``[B, C, H, W]`` at timesteps or noise labels ``t`` ``[B]``."""
        side = self.grid * self.patch_size
        if tuple(x_t.shape[-2:]) != (side, side):
            raise ValueError(f"this DiT is built for {side}x{side} images (image_size), got {tuple(x_t.shape[-2:])}")
        c = self.embed(t, cond)
        x = self.patch_embed(patchify(x_t, self.patch_size).to(self.patch_embed.weight.dtype)) + self.pos_embed
        for block in self.blocks:
            x = block(x, c)
        out = unpatchify(self.final_layer(x, c), self.patch_size, self.grid, self.grid)
        # Under autocast the linear layers return bf16/fp16; the contract is x_t's dtype.
        return out.to(x_t.dtype)


#: The configurations of Peebles and Xie (2023), Table 4: size -> (depth N, hidden size d, heads).
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}


def dit(
    *,
    in_channels: int = 3,
    out_channels: int | None = None,
    image_size: int = 32,
    patch_size: int = 2,
    size: Literal["S", "B", "L", "XL"] = "S",
    depth: int | None = None,
    hidden_size: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float = 4.0,
    pos_embed: Literal["sincos", "learned"] = "sincos",
    class_cond: bool = True,
    learn_sigma: bool = False,
) -> DiT:
    """The diffusion transformer of Peebles and Xie (2023); the defaults are DiT-S/2 on 3x32x32 images (32.5M parameters).

    The network is named by its size and patch size, DiT-S/2 for ``size = "S"``
    and ``patch_size = 2``. A named size sets ``depth``, ``hidden_size`` and
    ``num_heads`` (Table 4: S 12/384/6, B 12/768/12, L 24/1024/16, XL
    28/1152/16); each of the three given explicitly overrides the size's value,
    so ``size = "S"`` with ``hidden_size = 96`` is DiT-S's depth and heads at
    width 96. The paper's models work on the 4x32x32 latents of a 256x256
    image (``in_channels = 4``, ``image_size = 32``) and learn the variance.

    Args:
        in_channels: image channels of ``x_t`` (3 for RGB, 1 for grey, 4 for
            Stable Diffusion's latents).
        out_channels: channels of the output; ``None`` means ``in_channels``.
        image_size: height and width of the images in pixels; must divide by
            ``patch_size``. The position embedding is built for this size.
        patch_size: side p of the square patches that become tokens: an
            image of side I gives ``(I / p) ** 2`` tokens (the paper: 2, 4 or 8;
            halving p quadruples the tokens and the compute).
        size: the named configuration, "S", "B", "L" or "XL", that sets
            ``depth``, ``hidden_size`` and ``num_heads`` unless they are given.
        depth: number of DiT blocks N; unset: the size's.
        hidden_size: token width d; must divide by ``num_heads`` (and by 4
            for the sin-cos position embedding); unset: the size's.
        num_heads: attention heads; unset: the size's.
        mlp_ratio: each block's MLP hidden width as a multiple of ``hidden_size``.
        pos_embed: position embedding of the tokens: "sincos", the fixed 2-D
            sine-cosine embedding of the paper (from ViT/MAE), or "learned",
            a parameter initialised N(0, 0.02).
        class_cond: accept a conditioning embedding (``cond_dim = hidden_size``)
            added to the timestep embedding before adaLN-Zero; the class
            embedding, its null token and the label dropout belong to the
            conditioner.
        learn_sigma: also output the reverse variance (Nichol and Dhariwal
            2021, sec. 3.1), as the paper's models do: twice the output
            channels, the prediction then the interpolation ``v`` between
            log beta and log beta-tilde; for the ``hybrid`` objective.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    named = dict(zip(("depth", "hidden_size", "num_heads"), SIZES[size]))
    depth = named["depth"] if depth is None else depth
    hidden_size = named["hidden_size"] if hidden_size is None else hidden_size
    num_heads = named["num_heads"] if num_heads is None else num_heads
    _check(in_channels, out_channels, image_size, patch_size, depth, hidden_size, num_heads, mlp_ratio, pos_embed)
    net = DiT(
        in_channels=in_channels,
        out_channels=(in_channels if out_channels is None else out_channels) * (2 if learn_sigma else 1),
        image_size=image_size,
        patch_size=patch_size,
        depth=depth,
        hidden_size=hidden_size,
        num_heads=num_heads,
        mlp_ratio=float(mlp_ratio),
        pos_embed=pos_embed,
        cond_dim=hidden_size if class_cond else None,
        learned_variance=bool(learn_sigma),
    )
    net.image_shape = (in_channels, image_size, image_size)  # what it is built for (gentool.Denoiser)
    return net


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check(in_channels, out_channels, image_size, patch_size, depth, hidden_size, num_heads, mlp_ratio, pos_embed):
    for name, value in [("in_channels", in_channels), ("image_size", image_size), ("patch_size", patch_size),
                        ("depth", depth), ("hidden_size", hidden_size), ("num_heads", num_heads)]:
        _positive(name, value)
    if out_channels is not None:
        _positive("out_channels", out_channels)
    if image_size % patch_size:
        raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} does not divide by num_heads {num_heads}")
    if pos_embed not in ("sincos", "learned"):
        raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
    if pos_embed == "sincos" and hidden_size % 4:
        raise ValueError(f"hidden_size must divide by 4 for the sin-cos position embedding, got {hidden_size}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or int(hidden_size * mlp_ratio) < 1:
        raise ValueError(f"mlp_ratio must be positive (a hidden width of at least 1), got {mlp_ratio!r}")
