"""The space the diffusion runs in: images themselves, or the latents of an autoencoder times a scale factor.

Latent diffusion (Rombach et al. 2022) trains the denoiser on z = s E(x),
where E is the autoencoder's encoder and s its scale factor, and generates
images as D(z / s). Rombach et al. introduced s so that one noise schedule
suits latent spaces of any scale: s = 1 / std of the latents (taken over
every dimension at once), which gives the diffusion data of unit variance
(Stable Diffusion's 0.18215 is this number for its autoencoder). gentool
measures it on the train split when the autoencoder does not fix it
(:mod:`gentool.latent_cache`) and stores it with the run.

:class:`LatentSpace` holds the run's autoencoder and s. In pixel space (the
``identity`` autoencoder, the default) ``encode`` and ``decode`` return their
argument itself: a recipe without ``[autoencoder]`` computes exactly what it
computed before the autoencoder kind existed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gentool.errors import GentoolError

#: images encoded or latents decoded per call of the autoencoder (its memory grows with the batch)
CHUNK = 32


class LatentError(GentoolError, ValueError):
    """An autoencoder that cannot serve the run: no weights yet, other weights than the run was trained with."""


class LatentSpace:
    """The run's autoencoder (``None``: pixel space) and its scale factor s.

    ``scale_factor`` is the autoencoder's own when it fixes one, else
    ``None`` until it is measured (:meth:`gentool.Run.latent_dataset`) or
    restored from a checkpoint (:meth:`restore`).
    """

    def __init__(self, autoencoder: Any = None, name: str = "pixel space") -> None:
        self.autoencoder, self.name = autoencoder, name
        self.identity = autoencoder is None or bool(getattr(autoencoder, "identity", False))
        own = None if autoencoder is None else getattr(autoencoder, "scale_factor", None)
        self.scale_factor: float | None = 1.0 if self.identity else (None if own is None else float(own))
        #: where the scale factor came from: "autoencoder", "measured" or "checkpoint"
        self.scale_source = "autoencoder" if self.scale_factor is not None else None

    def __repr__(self) -> str:
        return f"LatentSpace({self.name!r}, scale_factor={self.scale_factor})"

    @property
    def fingerprint(self) -> str:
        """The hash of the autoencoder's weights ("" in pixel space)."""
        return "" if self.identity else str(getattr(self.autoencoder, "fingerprint", ""))

    def require_weights(self) -> None:
        """Raise :class:`LatentError` when the autoencoder has no weights yet (its own words say how to get them)."""
        missing = getattr(self.autoencoder, "missing_weights", None)
        why = missing() if callable(missing) else None
        if why:
            raise LatentError(f"autoencoder {self.name!r}: {why}")

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(c, h, w)`` of the latents of images ``(C, H, W)`` (pixel space: the same)."""
        shape = tuple(int(d) for d in image_shape)
        return shape if self.identity else tuple(int(d) for d in self.autoencoder.latent_shape(shape))

    def image_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images latents ``(c, h, w)`` decode to (pixel space: the same)."""
        shape = tuple(int(d) for d in latent_shape)
        return shape if self.identity else tuple(int(d) for d in self.autoencoder.image_shape(shape))

    @torch.no_grad()
    def encode_raw(self, x: Tensor) -> Tensor:
        """E(x), unscaled, float32, in chunks of :data:`CHUNK` images."""
        self.require_weights()
        return torch.cat([self.autoencoder.encode(c.float()).float() for c in x.split(CHUNK)])

    @torch.no_grad()
    def encode(self, x: Tensor, scale_factor: float) -> Tensor:
        """s E(x); pixel space: ``x`` itself."""
        if self.identity:
            return x
        return self.encode_raw(x) * scale_factor

    @torch.no_grad()
    def decode(self, z: Tensor, scale_factor: float) -> Tensor:
        """D(z / s) clamped to [-1, 1]; pixel space: ``z`` itself."""
        if self.identity:
            return z
        self.require_weights()
        return torch.cat([self.autoencoder.decode(c.float() / scale_factor).float() for c in z.split(CHUNK)]).clamp(-1, 1)

    def record(self) -> dict[str, Any]:
        """What decoding needs besides the recipe's ``[autoencoder]`` table: stored with checkpoints and exports."""
        return {"autoencoder": self.name, "fingerprint": self.fingerprint, "scale_factor": self.scale_factor}

    def restore(self, record: Any, source: Any) -> str | None:
        """Take the scale factor a checkpoint (or export) ``source`` recorded; returns a warning, or None.

        A checkpoint written with other autoencoder weights than the run's
        (another ``fingerprint``) decodes wrongly: that is the warning.
        """
        if self.identity or not isinstance(record, dict):
            return None
        scale = record.get("scale_factor")
        if isinstance(scale, (int, float)) and self.scale_source != "autoencoder":
            self.scale_factor, self.scale_source = float(scale), "checkpoint"
        saved = record.get("fingerprint")
        if saved and self.fingerprint and saved != self.fingerprint:
            return (f"{source} was trained on the latents of autoencoder weights {saved[:12]}, but the recipe's "
                    f"autoencoder {self.name!r} now has weights {self.fingerprint[:12]}: its samples decode with "
                    "other weights than it learnt (were they retrained in place?)")
        return None
