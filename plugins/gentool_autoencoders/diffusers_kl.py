"""The ``diffusers_kl`` autoencoder: diffusers' ``AutoencoderKL`` (Stable Diffusion's VAE and its kin), from a folder.

``AutoencoderKL.from_pretrained(path)`` reads a folder written by
``save_pretrained`` (``config.json`` and ``diffusion_pytorch_model.safetensors``),
with ``local_files_only`` unless ``download = true`` asks for the hub, and
with ``use_safetensors``: a pickled ``.bin`` is never loaded. ``encode``
returns the mode (the mean) of ``vae.encode(x).latent_dist``, ``decode`` is
``vae.decode(z).sample``; the scale factor is gentool's (measured 1/std,
unless given), not the config's ``scaling_factor``, which belongs to the
data the VAE's makers measured it on (Stable Diffusion's 0.18215).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from gentool_autoencoders.files import state_fingerprint


class DiffusersKL(nn.Module):
    """A diffusers ``AutoencoderKL`` as a :class:`gentool.Autoencoder`."""

    identity = False

    def __init__(self, vae: nn.Module, scale_factor: float | None) -> None:
        super().__init__()
        self.vae = vae
        self.scale_factor = scale_factor
        config = vae.config
        self.in_channels, self.latent_channels = int(config.in_channels), int(config.latent_channels)
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.fingerprint = state_fingerprint(vae)

    def encode(self, x: Tensor) -> Tensor:
        return self.vae.encode(x).latent_dist.mode()

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z).sample

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = image_shape
        if c != self.in_channels:
            raise ValueError(f"its VAE takes {self.in_channels}-channel images, not {c}-channel ones")
        if h % self.factor or w % self.factor:
            raise ValueError(f"its VAE divides the sides by {self.factor}, so images must be a multiple of "
                             f"{self.factor} wide and high, not {h}x{w}")
        return (self.latent_channels, h // self.factor, w // self.factor)

    def image_shape(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = latent_shape
        if c != self.latent_channels:
            raise ValueError(f"its VAE's latents have {self.latent_channels} channels, not {c}")
        return (self.in_channels, h * self.factor, w * self.factor)


def diffusers_kl(
    *,
    path: str,
    subfolder: str = "",
    download: bool = False,
    scale_factor: float | None = None,
) -> DiffusersKL:
    """diffusers' ``AutoencoderKL`` (e.g. Stable Diffusion's VAE) loaded from a local folder.

    Args:
        path: the folder ``save_pretrained`` wrote (``config.json`` and
            ``diffusion_pytorch_model.safetensors``); with ``download``, a hub
            name such as ``stabilityai/sd-vae-ft-mse``.
        subfolder: the VAE's subfolder of ``path`` (``vae`` in a whole Stable
            Diffusion pipeline's folder).
        download: fetch ``path`` from the Hugging Face hub when it is not in
            its cache (default: never download at run time).
        scale_factor: the latents' scale factor s; none: 1 / std of the
            training latents, measured by the first run that uses it
            (Stable Diffusion's VAE has 0.18215 in its config).
    """
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ValueError("path: the diffusers_kl autoencoder needs the optional diffusers library: "
                         "pip install gentool[diffusers]") from None
    if scale_factor is not None and not scale_factor > 0:
        raise ValueError(f"scale_factor must be positive (or left out: measured), got {scale_factor}")
    folder = Path(path) / subfolder if subfolder else Path(path)
    if not download and not folder.is_dir():
        raise ValueError(f"path {str(folder)!r}: no such folder. Save the VAE there once "
                         "(AutoencoderKL.from_pretrained(NAME).save_pretrained(FOLDER), or `hf download NAME "
                         "--local-dir FOLDER`), or set download = true to fetch a hub name at run time")
    try:
        vae = AutoencoderKL.from_pretrained(path, subfolder=subfolder or None, local_files_only=not download,
                                            use_safetensors=True)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ValueError(f"path {path!r}: diffusers cannot load an AutoencoderKL from it ({str(exc)[:300]})") from None
    return DiffusersKL(vae.eval(), scale_factor)
