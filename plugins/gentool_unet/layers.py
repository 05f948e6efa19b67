"""Building blocks of the DDPM U-Net (Ho et al. 2020, Appendix B).

The blocks follow the authors' CIFAR-10 model (``diffusion_tf/models/unet.py``):
GroupNorm with 32 groups, SiLU ("swish"), a residual block that adds a
projection of the time embedding, single- or multi-head self-attention, strided
convolution down and nearest-neighbour-plus-convolution up. The layers that
end a residual branch are zero-initialised, as in the original, so every block
starts as the identity and the network's initial output is zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

#: GroupNorm groups in every normalisation layer; channel counts must divide by it.
GROUPS = 32


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(32) with the epsilon of TensorFlow's ``group_norm`` used by Ho et al."""
    return nn.GroupNorm(GROUPS, channels, eps=1e-6)


def zero_(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of the timesteps (Vaswani et al. 2017, Sec. 3.5).

    Returns float32 ``[B, dim]``: ``sin(t * f_i)`` then ``cos(t * f_i)`` for the
    frequencies ``f_i = max_period ** (-i / (dim / 2))``, ``i = 0..dim/2 - 1``.

    Args:
        t: int64 ``[B]``, 0-based timesteps (any real values work).
        dim: embedding width; must be even.
        max_period: the longest wavelength, 10000 as in the Transformer.
    """
    half = dim // 2
    i = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * i / half)
    # float32 even under autocast: bf16 cannot represent t * f_0 = t exactly for t > 256.
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ResBlock(nn.Module):
    """Residual block: (GroupNorm, SiLU, conv) twice, the time embedding added between.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output; a 1x1 conv maps the skip path when they differ.
        emb_dim: width of the time (plus conditioning) embedding.
        dropout: dropout probability before the second convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Residual self-attention over all pixels of a feature map.

    ``softmax(Q K^T / sqrt(d)) V`` per head, through
    :func:`torch.nn.functional.scaled_dot_product_attention` (flash or
    memory-efficient kernels where available).

    Args:
        channels: channels of the feature map; must divide by ``num_heads``.
        num_heads: attention heads; Ho et al. use one.
    """

    def __init__(self, channels: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        # One 1x1 conv for q, k and v: the same parameters as Ho et al.'s three NIN layers.
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        height = x.shape[-2]
        qkv = self.qkv(self.norm(x))
        q, k, v = rearrange(qkv, "b (n heads d) x y -> n b heads (x y) d", n=3, heads=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b heads (x y) d -> b (heads d) x y", x=height)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve the resolution with a 3x3 convolution of stride 2.

    Args:
        channels: channels in and out.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        # TensorFlow's "SAME" padding for stride 2 pads right and bottom only;
        # matching it keeps ported checkpoints of Ho et al. exact.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour, then a 3x3 convolution.

    Args:
        channels: channels in and out.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
