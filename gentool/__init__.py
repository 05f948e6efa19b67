"""gentool: a plugin-based toolbox for denoising diffusion models.

Timestep convention: 0-based. gentool's ``t`` in ``0..T-1`` is Ho et al.'s
``t + 1``; see :mod:`gentool.diffusion`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@gentool.hookimpl``.
hookimpl = pluggy.HookimplMarker("gentool")

from gentool.interfaces import (  # noqa: E402
    Conditioner,
    DataSource,
    Denoiser,
    EpsFn,
    Sampler,
    Schedule,
    Task,
    TaskResult,
)

__all__ = [
    "Conditioner",
    "DataSource",
    "Denoiser",
    "EpsFn",
    "Sampler",
    "Schedule",
    "Task",
    "TaskResult",
    "__version__",
    "hookimpl",
]
