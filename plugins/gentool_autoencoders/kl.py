"""The ``kl`` autoencoder: a small convolutional autoencoder with a KL-regularised latent.

The first stage of latent diffusion (Rombach et al. 2022, sec. 3.1 and
appendix G): an encoder maps an image x to the mean and log-variance of a
diagonal Gaussian q(z | x) over latents ``f`` times smaller in each side, a
decoder maps z back, and training minimises the reconstruction error plus a
small KL(q(z | x) || N(0, I)) that keeps the latent space smooth and of a
bounded scale. The encoder and decoder are residual convolution stacks
(GroupNorm, SiLU, 3x3 convolutions) as in the LDM code, without attention and
much smaller: for 64x64 images and ``channel_mult = [1, 2, 2]``, f = 4 and
16x16 latents. ``encode`` returns the posterior mean (the cache's latents are
deterministic); training samples z from q(z | x) (``train.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentool_autoencoders.files import WEIGHTS, config_difference, load_tensors, state_fingerprint


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, max(channels // 4, 1)), channels)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 convolution, twice, plus the input (1x1-projected when the width changes)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    """x [B, C, H, W] -> moments [B, 2 c, H / f, W / f] (mean, then log-variance)."""

    def __init__(self, in_channels: int, channels: int, channel_mult: list[int], num_res_blocks: int,
                 latent_channels: int) -> None:
        super().__init__()
        widths = [channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        layers, c = [], widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, width))
                c = width
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # halve the side
        self.down = nn.Sequential(*layers)
        self.mid = ResBlock(c, c)
        self.norm_out, self.conv_out = norm(c), nn.Conv2d(c, 2 * latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Upsample(nn.Module):
    """Nearest-neighbour doubling, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """z [B, c, h, w] -> x [B, C, h f, w f]: the encoder's levels in reverse."""

    def __init__(self, out_channels: int, channels: int, channel_mult: list[int], num_res_blocks: int,
                 latent_channels: int) -> None:
        super().__init__()
        widths = [channels * m for m in channel_mult]
        c = widths[-1]
        self.conv_in = nn.Conv2d(latent_channels, c, 3, padding=1)
        self.mid = ResBlock(c, c)
        layers = []
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, widths[level]))
                c = widths[level]
            if level > 0:
                layers.append(Upsample(c))
        self.up = nn.Sequential(*layers)
        self.norm_out, self.conv_out = norm(c), nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class KLAutoencoder(nn.Module):
    """Encoder and decoder with a Gaussian latent (a :class:`gentool.Autoencoder`)."""

    identity = False

    def __init__(self, *, in_channels: int, latent_channels: int, channels: int, channel_mult: list[int],
                 num_res_blocks: int, path: str | Path | None = None, scale_factor: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.channels, self.channel_mult, self.num_res_blocks = channels, list(channel_mult), num_res_blocks
        self.factor = 2 ** (len(channel_mult) - 1)
        self.encoder = Encoder(in_channels, channels, self.channel_mult, num_res_blocks, latent_channels)
        self.decoder = Decoder(in_channels, channels, self.channel_mult, num_res_blocks, latent_channels)
        self.path = Path(path) if path is not None else None
        self.scale_factor = scale_factor
        self.trained_steps: int | None = None  # None: no weights loaded
        self.fingerprint = ""

    def config(self) -> dict:
        """The architecture options (what the weights file must match)."""
        return {"in_channels": self.in_channels, "latent_channels": self.latent_channels, "channels": self.channels,
                "channel_mult": self.channel_mult, "num_res_blocks": self.num_res_blocks}

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and log-variance of q(z | x) (the log-variance clamped to [-30, 20], as in the LDM code)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: Tensor) -> Tensor:
        return self.moments(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = image_shape
        if c != self.in_channels:
            raise ValueError(f"it takes {self.in_channels}-channel images (in_channels), not {c}-channel ones")
        if h % self.factor or w % self.factor:
            raise ValueError(f"its sides are divided by {self.factor} (2 ** (len(channel_mult) - 1)), so images "
                             f"must be a multiple of {self.factor} wide and high, not {h}x{w}")
        return (self.latent_channels, h // self.factor, w // self.factor)

    def image_shape(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = latent_shape
        if c != self.latent_channels:
            raise ValueError(f"its latents have {self.latent_channels} channels, not {c}")
        return (self.in_channels, h * self.factor, w * self.factor)

    def weights_file(self) -> Path | None:
        return self.path / WEIGHTS if self.path is not None else None

    def load_weights(self, file: Path) -> None:
        """Load ``autoencoder.safetensors``; other architecture options than the file's are named."""
        tensors, meta = load_tensors(file)
        saved = json.loads(meta.get("config", "{}"))
        diff = config_difference(saved, self.config())
        if diff:
            raise ValueError(f"path {str(self.path)!r}: its weights were trained with other options than the "
                             f"recipe's [autoencoder] table ({'; '.join(diff)}); use the options it was trained "
                             "with, or train it again into another path")
        self.load_state_dict(tensors)
        self.trained_steps = int(meta.get("step", 0))
        self.fingerprint = state_fingerprint(self)

    def missing_weights(self) -> str | None:
        if self.trained_steps is not None:
            return None
        return (f"no trained weights at {self.weights_file()}; train them with `gentool autoencoder train RECIPE` "
                "(the recipe of this [autoencoder] table, whose [data] it learns)")


def kl(
    *,
    path: str,
    in_channels: int = 3,
    latent_channels: int = 4,
    channels: int = 64,
    channel_mult: list[int] = [1, 2, 2],
    num_res_blocks: int = 1,
    scale_factor: float | None = None,
    steps: int = 5000,
    batch_size: int = 32,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    checkpoint_every: int = 1000,
    log_every: int = 100,
) -> KLAutoencoder:
    """A small KL-regularised convolutional autoencoder that gentool trains (Rombach et al. 2022).

    ``gentool autoencoder train RECIPE`` trains it on the recipe's ``[data]``
    train split into ``path`` (resuming from its checkpoints), and
    ``gentool autoencoder test RECIPE`` measures its reconstruction error;
    a run reads the weights from ``path/autoencoder.safetensors``.

    Args:
        path: the autoencoder's folder: its weights, checkpoints and metrics.
        in_channels: image channels (3 RGB, 1 grey).
        latent_channels: channels of the latents (4, as Stable Diffusion's).
        channels: width of the first level.
        channel_mult: width multiplier per level; each level after the first
            halves the side, so the latents are ``2 ** (len - 1)`` times smaller.
        num_res_blocks: residual blocks per level.
        scale_factor: the latents' scale factor s; none: 1 / std of the
            training latents, measured by the first run that uses it.
        steps: training steps of ``gentool autoencoder train``.
        batch_size: training images per step.
        lr: Adam's learning rate (betas 0.5, 0.9, as the LDM autoencoders).
        kl_weight: weight of the KL term against the L1 reconstruction loss
            (both summed over an image's values; the LDM autoencoders use 1e-6).
        checkpoint_every: training steps between checkpoints.
        log_every: training steps between log lines.
    """
    if not channel_mult or min(channel_mult) < 1 or channels < 1 or latent_channels < 1 or num_res_blocks < 1:
        raise ValueError(f"channel_mult must be a non-empty list of positive integers and channels, latent_channels "
                         f"and num_res_blocks positive; got {channel_mult}, {channels}, {latent_channels}, "
                         f"{num_res_blocks}")
    for key, value in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every),
                       ("log_every", log_every)):
        if value < 1:
            raise ValueError(f"{key} must be at least 1, got {value}")
    if scale_factor is not None and not scale_factor > 0:
        raise ValueError(f"scale_factor must be positive (or left out: measured), got {scale_factor}")
    model = KLAutoencoder(in_channels=in_channels, latent_channels=latent_channels, channels=channels,
                          channel_mult=channel_mult, num_res_blocks=num_res_blocks, path=path,
                          scale_factor=scale_factor)
    file = model.weights_file()
    if file.is_file():
        model.load_weights(file)
    return model
