"""diffusers' UNet2DModel in the DDPM CIFAR-10 configuration, for ``gentool bench --compare diffusers``.

diffusers is an optional dependency: ``pip install gentool[bench]`` (or ``pip install diffusers``) to use this.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from gentool.errors import UsageError


#: diffusers' UNet2DModel as Ho et al.'s CIFAR-10 network (35.7M parameters, one
#: attention head, attention at 16x16 on both paths): the google/ddpm-cifar10-32 layout.
DDPM_CIFAR10_DIFFUSERS: dict[str, Any] = {
    "sample_size": 32, "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
    "block_out_channels": (128, 256, 256, 256),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": None, "norm_eps": 1e-6, "downsample_padding": 0,
    "flip_sin_to_cos": False, "freq_shift": 1, "dropout": 0.1,
}


class DiffusersDenoiser(nn.Module):
    """A diffusers ``UNet2DModel`` behind gentool's denoiser contract (eps, unconditional)."""

    prediction = "eps"
    cond_dim = None

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.unet(x_t, t).sample


def diffusers_model(**config: Any) -> nn.Module:
    """The DDPM CIFAR-10 ``UNet2DModel`` (``config`` overrides keys) as a DiffusionModel."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise UsageError("--compare diffusers needs the diffusers package, which is not installed; "
                         "install it with `pip install 'gentool[bench]'` or `pip install diffusers`") from None
    from gentool.model import DiffusionModel

    return DiffusionModel(DiffusersDenoiser(UNet2DModel(**{**DDPM_CIFAR10_DIFFUSERS, **config})))
