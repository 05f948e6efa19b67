"""Built-in denoiser plugin: the attention U-Net of Ho et al. (2020) as ``unet``.

The network module (and torch) is imported when the hook runs or ``UNet`` is
first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

from __future__ import annotations

import gentool

__all__ = ["UNet", "gentool_register_denoisers"]


def __getattr__(name: str):
    if name == "UNet":
        from gentool_unet.unet import UNet

        return UNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@gentool.hookimpl
def gentool_register_denoisers(register):
    from gentool_unet import unet

    register("unet", unet.unet)
