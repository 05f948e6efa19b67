"""Features of a data split, computed once and cached on disk.

The cache file is keyed by everything that changes the features: the data
source and its options (without ``download`` and ``random_flip``: the reference
is always the un-augmented data), the split, how many images, the feature
extractor, the identity of its weights file (path, size, modification time)
and the features it computes. Each entry is one ``.pt`` file of tensors only,
read with ``weights_only=True``, next to nothing else, with a checksum of its
tensors: a damaged file (truncated, a flipped bit) is reported and rebuilt.
Delete the folder to start afresh (for example after changing the data files
in place).

The folder is ``$GENTOOL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/gentool``
(``~/.cache/gentool``), under ``reference/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from gentool.atomic import atomic_save, checksum_matches, with_checksum
from gentool.errors import describe_os_error
from gentool.evaluation.features import UInt8Images, concat, extract

CACHE_VERSION = 1
IGNORED_OPTIONS = ("download", "random_flip")  # no effect on the un-augmented images
_MEMORY: dict[str, dict[str, torch.Tensor]] = {}  # the last entry, for evaluations during training


def cache_root(path: str | Path | None = None) -> Path:
    """Where reference features are cached (see the module docstring)."""
    if path:
        return Path(path)
    if os.environ.get("GENTOOL_CACHE_DIR"):
        return Path(os.environ["GENTOOL_CACHE_DIR"]) / "reference"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gentool" / "reference"


def weights_identity(weights: str) -> dict[str, Any] | None:
    if not weights:
        return None
    st = Path(weights).stat()
    return {"path": str(Path(weights).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def reference_key(run, split: str, reference_n: int, fx, weights: str = "") -> dict[str, Any]:
    """Everything the cached features depend on, as plain JSON data."""
    spec = run.recipe.data
    options = {k: v for k, v in spec.options.items() if k not in IGNORED_OPTIONS}
    if isinstance(options.get("root"), str):
        options["root"] = str(Path(options["root"]).resolve())
    return {
        "version": CACHE_VERSION,
        "data": spec.name,
        "options": options,
        "split": split,
        "reference_n": reference_n,
        "feature_extractor": fx.get_name(),
        "extractor_class": f"{type(fx).__module__}.{type(fx).__qualname__}",
        "weights": weights_identity(weights),
        "features": list(fx.get_requested_features_list()),
    }


def cache_file(root: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{key['data']}-{key['split']}-{key['feature_extractor']}")
    return root / f"{safe}-{digest}.pt"


def reference_dataset(run, split: str):
    """The un-augmented data split (``random_flip`` off where the source has it)."""
    spec = run.recipe.data
    if not spec.options.get("random_flip"):
        return run.dataset(split)
    factory = run.registry.get("data_source", spec.name).factory
    return factory(split, **{**spec.options, "random_flip": False})


def subset(n_total: int, reference_n: int) -> list[int] | None:
    """A seeded random subset of ``reference_n`` indices (None: all images)."""
    if not reference_n or reference_n >= n_total:
        return None
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(0))
    return sorted(perm[:reference_n].tolist())


def reference_features(run, fx, *, split: str, reference_n: int = 0, weights: str = "", batch_size: int = 250,
                       cache_dir: str | Path | None = None, bar=None) -> tuple[dict[str, torch.Tensor], dict]:
    """``({feature: [N, D]}, info)`` for the data split, from the cache when it has them.

    ``info`` says where the cache file is, whether it was a hit, and N.
    ``bar`` is a rich ``Progress`` to show the extraction in.
    """
    key = reference_key(run, split, reference_n, fx, weights)
    path = cache_file(cache_root(cache_dir), key)
    info = {"cache_file": str(path), "cached": True}
    feats = _MEMORY.get(str(path))
    if feats is None and path.is_file():
        feats = _read_cache(path, json.dumps(key, sort_keys=True, default=str))
    if feats is None:
        info["cached"] = False
        feats = compute_features(run, fx, split, reference_n, batch_size, bar)
        try:
            atomic_save(with_checksum({"key": json.dumps(key, sort_keys=True, default=str), "features": feats}), path)
        except OSError as exc:  # a read-only or full cache folder costs the next run time, not this result
            warnings.warn(f"could not cache the reference features: {describe_os_error(exc)}", stacklevel=2)
    _MEMORY.clear()
    _MEMORY[str(path)] = feats
    info["n"] = int(next(iter(feats.values())).shape[0])
    return feats, info


def _read_cache(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The cached features if the file is whole and for ``key``; a damaged file is reported and rebuilt."""
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(stored, dict) or not isinstance(stored.get("features"), dict):
            raise ValueError("not a gentool reference-feature file")
        if not checksum_matches(stored):
            raise ValueError("its tensors do not match the checksum saved with them")
    except Exception as exc:  # noqa: BLE001 - truncated, flipped bits, not ours: compute them again
        warnings.warn(f"{path}: damaged cached reference features ({' '.join(str(exc).split())[:160]}); "
                      "computing them again", stacklevel=3)
        return None
    return stored["features"] if stored.get("key") == key else None


def compute_features(run, fx, split: str, reference_n: int, batch_size: int, bar=None) -> dict[str, torch.Tensor]:
    """Run the extractor over the (subset of the) data split, advancing ``bar`` if given."""
    data = reference_dataset(run, split)
    images = UInt8Images(data, subset(len(data), reference_n))
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=0)
    task = bar.add_task(f"reference features ({split} split)", total=len(images)) if bar is not None else None
    parts = []
    for batch in loader:
        parts.append(extract(fx, batch.to(run.device)))
        if bar is not None:
            bar.advance(task, batch.shape[0])
    return concat(parts)
