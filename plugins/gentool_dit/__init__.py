"""Built-in denoiser plugin: the diffusion transformer of Peebles and Xie (2023) as ``dit``.

The network module (and torch) is imported when the hook runs or ``DiT`` is
first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

from __future__ import annotations

import gentool

__all__ = ["DiT", "gentool_register_denoisers"]


def __getattr__(name: str):
    if name == "DiT":
        from gentool_dit.dit import DiT

        return DiT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@gentool.hookimpl
def gentool_register_denoisers(register):
    from gentool_dit import dit

    register("dit", dit.dit)
