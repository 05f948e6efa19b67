"""The attention U-Net of Ho et al. (2020), and its factory ``unet``.

Layout (Appendix B, and ``diffusion_tf/models/unet.py``): a 3x3 input conv;
per resolution level ``num_res_blocks`` residual blocks (with self-attention at
the chosen feature-map sizes) and a downsampling step; a middle block
res-attention-res; the mirrored up path with ``num_res_blocks + 1`` blocks per
level, each fed the matching down-path activation concatenated on the channels;
GroupNorm, SiLU and a zero-initialised 3x3 output conv. The sinusoidal time
embedding goes through a two-layer MLP of width ``4 * channels``; a
conditioning embedding is added to it, so every residual block sees both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentool_unet.layers import (
    GROUPS,
    AttentionBlock,
    Downsample,
    ResBlock,
    Upsample,
    group_norm,
    timestep_embedding,
    zero_,
)

class Block(nn.Module):
    """A residual block, followed by self-attention when ``attention`` is set."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, attention: bool, num_heads: int) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.attn = AttentionBlock(out_ch, num_heads) if attention else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.attn(self.res(x, emb))


class Level(nn.Module):
    """The blocks of one resolution and the resampling after them (``None`` at the end)."""

    def __init__(self, blocks: list[Block], resample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample


class UNet(nn.Module):
    """The DDPM denoiser: ``net(x_t, t, cond=None)`` of ``x_t``'s shape and dtype (2C channels with a learned variance).

    Build it with :func:`unet`, which validates the options; the arguments here
    are the same, with ``attention_levels`` the indices of the levels (0 = full
    resolution) that get self-attention and ``cond_dim`` the width of the
    accepted conditioning embedding (``None``: unconditional).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        channels: int,
        channel_mult: list[int],
        num_res_blocks: int,
        attention_levels: set[int],
        dropout: float,
        num_heads: int,
        cond_dim: int | None,
        learned_variance: bool = False,
    ) -> None:
        super().__init__()
        self.learned_variance = learned_variance  # out_channels = 2C: the prediction, then v (gentool.vlb)
        self.cond_dim = cond_dim
        self.channels = channels
        emb_dim = 4 * channels
        self.time_embed = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        def block(in_ch: int, out_ch: int, attention: bool) -> Block:
            return Block(in_ch, out_ch, emb_dim, dropout, attention, num_heads)

        # Down path; `skips` records the channels of every activation the up path will concatenate.
        ch, skips, self.down = channels, [channels], nn.ModuleList()
        for i, mult in enumerate(channel_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(block(ch, channels * mult, i in attention_levels))
                ch = channels * mult
                skips.append(ch)
            last = i == len(channel_mult) - 1
            self.down.append(Level(blocks, None if last else Downsample(ch)))
            if not last:
                skips.append(ch)

        self.mid = nn.ModuleList([block(ch, ch, True), block(ch, ch, False)])

        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(block(ch + skips.pop(), channels * mult, i in attention_levels))
                ch = channels * mult
            self.up.append(Level(blocks, Upsample(ch) if i > 0 else None))

        self.norm_out = group_norm(ch)
        self.conv_out = zero_(nn.Conv2d(ch, out_channels, 3, padding=1))

    def embed(self, t: Tensor, cond: Tensor | None) -> Tensor:
        """The embedding every residual block sees: ``MLP(sinusoid(t)) + cond``."""
        weight = self.time_embed[0].weight
        emb = self.time_embed(timestep_embedding(t, self.channels).to(weight.dtype))
        if cond is not None:
            if self.cond_dim is None:
                raise ValueError("cond was given but this UNet is unconditional (class_cond=False)")
            emb = emb + cond.to(emb.dtype)
        return emb

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Predict the ``[objective]``'s target from ``x_t`` ``[B, C, H, W]`` at 0-based timesteps ``t`` ``[B]``."""
        emb = self.embed(t, cond)
        h = self.conv_in(x_t)
        hs = [h]
        for level in self.down:
            for blk in level.blocks:
                h = blk(h, emb)
                hs.append(h)
            if level.resample is not None:
                h = level.resample(h)
                hs.append(h)
        for blk in self.mid:
            h = blk(h, emb)
        for level in self.up:
            for blk in level.blocks:
                h = blk(torch.cat([h, hs.pop()], dim=1), emb)
            if level.resample is not None:
                h = level.resample(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        # Under autocast the convolutions return bf16/fp16; the contract is x_t's dtype.
        return out.to(x_t.dtype)


def unet(
    *,
    in_channels: int = 3,
    out_channels: int | None = None,
    image_size: int = 32,
    channels: int = 128,
    channel_mult: list[int] = [1, 2, 2, 2],  # noqa: B006 - never mutated; a list as a recipe writes it
    num_res_blocks: int = 2,
    attention_resolutions: list[int] = [16],  # noqa: B006
    dropout: float = 0.1,
    num_heads: int = 1,
    class_cond: bool = True,
    learn_sigma: bool = False,
) -> UNet:
    """The attention U-Net of Ho et al. (2020); the defaults are their CIFAR-10 model (35.7M parameters).

    Args:
        in_channels: image channels of ``x_t`` (3 for RGB, 1 for grey).
        out_channels: channels of the output; ``None`` means ``in_channels``.
        image_size: height and width of the images in pixels; must divide by
            ``2 ** (len(channel_mult) - 1)``.
        channels: base width of the network (the first level's channels);
            must divide by 32, the GroupNorm groups. The time embedding is
            ``4 * channels`` wide.
        channel_mult: width of each resolution level as a multiple of
            ``channels``; one entry per level, the resolution halving between
            levels (Ho et al.: ``[1, 2, 2, 2]`` at 32x32, ``[1, 1, 2, 2, 4, 4]`` at 256x256).
        num_res_blocks: residual blocks per level on the way down (the up
            path has one more per level).
        attention_resolutions: feature-map sizes in pixels (16 means 16x16)
            at which self-attention follows every residual block; each must be
            the size of one level, ``image_size / 2 ** i``. The middle block
            always has attention.
        dropout: dropout probability inside the residual blocks (Ho et al.:
            0.1 on CIFAR-10, 0 on the larger data sets).
        num_heads: attention heads; the channels at each attention level must
            divide by it. Ho et al. use one.
        class_cond: accept a conditioning embedding (``cond_dim = 4 * channels``)
            added to the time embedding; the class embedding itself belongs to
            the conditioner.
        learn_sigma: also output the reverse variance (Nichol and Dhariwal
            2021, sec. 3.1): twice the output channels, the prediction then the
            interpolation ``v`` between log beta and log beta-tilde; for the
            ``hybrid`` objective.
    """
    channel_mult, attention_resolutions = list(channel_mult), list(attention_resolutions)
    _check_sizes(in_channels, out_channels, image_size, channels, channel_mult, num_res_blocks)
    sizes = [image_size // 2**i for i in range(len(channel_mult))]
    levels = _attention_levels(attention_resolutions, sizes)
    _check_rest(channels, channel_mult, levels, dropout, num_heads)
    net = UNet(
        in_channels=in_channels,
        out_channels=(in_channels if out_channels is None else out_channels) * (2 if learn_sigma else 1),
        channels=channels,
        channel_mult=channel_mult,
        num_res_blocks=num_res_blocks,
        attention_levels=levels,
        dropout=dropout,
        num_heads=num_heads,
        cond_dim=4 * channels if class_cond else None,
        learned_variance=bool(learn_sigma),
    )
    net.image_shape = (in_channels, image_size, image_size)  # what it is built for (gentool.Denoiser)
    return net


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_sizes(in_channels, out_channels, image_size, channels, channel_mult, num_res_blocks) -> None:
    _positive("in_channels", in_channels)
    if out_channels is not None:
        _positive("out_channels", out_channels)
    _positive("image_size", image_size)
    _positive("channels", channels)
    _positive("num_res_blocks", num_res_blocks)
    if channels % GROUPS:
        raise ValueError(f"channels must divide by {GROUPS} (the GroupNorm groups), got {channels}")
    if not channel_mult:
        raise ValueError("channel_mult must name at least one level, got []")
    for m in channel_mult:
        _positive("channel_mult entries", m)
    factor = 2 ** (len(channel_mult) - 1)
    if image_size % factor:
        raise ValueError(
            f"image_size must divide by 2 ** (len(channel_mult) - 1) = {factor} "
            f"to downsample {len(channel_mult) - 1} times, got {image_size}"
        )


def _attention_levels(attention_resolutions: list[int], sizes: list[int]) -> set[int]:
    """Level indices whose feature-map size is in ``attention_resolutions``."""
    for r in attention_resolutions:
        if r not in sizes:
            raise ValueError(
                f"attention_resolutions: {r!r} is not a feature-map size of this network; "
                f"the sizes are {', '.join(map(str, sizes))} (image_size halved per level)"
            )
    return {i for i, size in enumerate(sizes) if size in attention_resolutions}


def _check_rest(channels, channel_mult, levels, dropout, num_heads) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    _positive("num_heads", num_heads)
    # The middle block attends at the last level's width.
    for i in levels | {len(channel_mult) - 1}:
        width = channels * channel_mult[i]
        if width % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide the {width} channels at level {i}")
