"""Built-in denoiser plugin: the attention U-Net of Ho et al. (2020) as ``unet``."""

from __future__ import annotations

import gentool
from gentool_unet import unet
from gentool_unet.unet import UNet

__all__ = ["UNet", "gentool_register_denoisers"]


@gentool.hookimpl
def gentool_register_denoisers(register):
    register("unet", unet.unet)
