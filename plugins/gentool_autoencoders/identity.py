"""The ``identity`` autoencoder: pixel space, where the diffusion runs on the images themselves."""

from __future__ import annotations

from torch import Tensor, nn


class Identity(nn.Module):
    """encode and decode return their argument; the core skips encoding, caching and scaling (``identity``)."""

    identity = True
    fingerprint = ""
    scale_factor = 1.0

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, z: Tensor) -> Tensor:
        return z

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(image_shape)

    def image_shape(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(latent_shape)


def identity() -> Identity:
    """Pixel space: the denoiser works on the images themselves (the default)."""
    return Identity()
