"""The latent cache: a data split encoded once by the run's autoencoder, kept as safetensors.

Latent diffusion trains on E(x) for every image x of the train split, epoch
after epoch; encoding them once and reading the latents back is what makes it
cheap. A split's latents go to ``<run.output_dir>/latent_cache/<data>-<split>-<key>.safetensors``
(shared by every run of that output folder: a U-Net and a DiT on the same
data and autoencoder encode once). The file holds two tensors, ``latents``
``[N, c, h, w]`` (float32, unscaled) and ``labels`` ``[N]``, and in its
metadata the key it was built for.

The key is a hash of what the latents depend on: the autoencoder's name,
options (less ``scale_factor`` and where its weights are: ``path``,
``download``) and weights (its ``fingerprint``), and the
data source's name and options (``root`` included), the split, its size and
a hash of three of its images (first, middle, last), so that a changed
autoencoder or data set gets a new file and is encoded again. A data source
with ``random_flip`` is encoded without flips, and the train split's
mirrored images are encoded too and appended (2N latents): the flips of
augmentation, computed by the autoencoder rather than by mirroring latents.

Reading never runs code: the file is opened with safetensors alone (no
pickle). A file at the cache path that is not a cache of this key (another
key, damaged, or not safetensors at all) is renamed ``*.corrupt`` and the
split is encoded again; gentool deletes nothing it did not write.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gentool.atomic import atomic_write_bytes
from gentool.latent import LatentSpace

FORMAT = "gentool-latents/1"
FOLDER = "latent_cache"
#: images encoded per batch while building the cache
BATCH = 64


class LatentData(Dataset):
    """A split as latents in memory (an :class:`gentool.interfaces.InMemoryImages`): ``(z [c, h, w], label)``."""

    def __init__(self, images: Tensor, labels: Tensor, classes: list | tuple = ()) -> None:
        self.images, self.labels, self.classes = images, labels, list(classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])


def _probe(data: Any) -> str:
    """A hash of the first, middle and last image of ``data`` (a changed folder of the same name is noticed)."""
    h = hashlib.sha256()
    n = len(data)
    for i in sorted({0, n // 2, n - 1}) if n else ():
        x = torch.as_tensor(data[i][0], dtype=torch.float32).contiguous()
        h.update(str(tuple(x.shape)).encode())
        h.update(x.numpy().tobytes())
    return h.hexdigest()


def cache_key(recipe: Any, space: LatentSpace, split: str, data: Any, flip: bool) -> dict[str, Any]:
    """What the latents of ``split`` depend on (see the module's docstring)."""
    ae = recipe.autoencoder.to_dict() if recipe.autoencoder is not None else {"name": space.name}
    for key in ("scale_factor", "path", "download"):  # scales after the cache; where the weights are (their
        ae.pop(key, None)                               # fingerprint is in the key)
    return json.loads(json.dumps({
        "format": FORMAT, "autoencoder": ae, "weights": space.fingerprint, "data": recipe.data.to_dict(),
        "split": split, "flip": flip, "n": len(data), "probe": _probe(data)}, sort_keys=True, default=str))


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_path(recipe: Any, key: dict[str, Any]) -> Path:
    """``<output_dir>/latent_cache/<data>-<split>-<16 hex digits of the key>.safetensors``."""
    name = f"{recipe.data.name}-{key['split']}-{key_hash(key)[:16]}.safetensors"
    return Path(recipe.run.output_dir) / FOLDER / name


def read_cache(path: Path, key: dict[str, Any], log: Callable[[str], None] = print) -> tuple[Tensor, Tensor] | None:
    """The ``(latents, labels)`` of a cache file built for ``key``; None when there is none.

    A file that is not one (unreadable as safetensors, another key, wrong
    tensors) is renamed ``*.corrupt``, with a line in the log saying why.
    """
    if not path.is_file():
        return None
    from safetensors import safe_open  # the optional format's import, where a cache is read

    why = None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != json.dumps(key, sort_keys=True):
                why = "it was built for another autoencoder or data set"
            elif set(f.keys()) != {"latents", "labels"}:
                why = f"it holds the tensors {sorted(f.keys())}, not latents and labels"
            else:
                z, y = f.get_tensor("latents"), f.get_tensor("labels")
    except Exception as exc:  # noqa: BLE001 - not safetensors (e.g. a pickle), truncated: never unpickled
        why = f"it is not a safetensors file of latents ({type(exc).__name__}: {str(exc)[:120]})"
    if why is None and (z.ndim != 4 or y.shape != (z.shape[0],) or z.shape[0] != key["n"] * (2 if key["flip"] else 1)):
        why = f"its tensors have the wrong shapes (latents {tuple(z.shape)}, labels {tuple(y.shape)})"
    if why is not None:
        target = path.with_name(path.name + ".corrupt")
        os.replace(path, target)
        log(f"warning: {path} is not a latent cache of this run ({why}); moved it to {target.name} and encoding again")
        return None
    return z, y


def write_cache(path: Path, latents: Tensor, labels: Tensor, key: dict[str, Any]) -> Path:
    """Write the cache file atomically (a crash leaves no half file)."""
    from safetensors.torch import save  # the optional format's import, where a cache is written

    metadata = {"format": FORMAT, "key": json.dumps(key, sort_keys=True)}
    data = save({"latents": latents.contiguous(), "labels": labels.contiguous()}, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, data)


@torch.no_grad()
def encode_split(space: LatentSpace, data: Any, device: torch.device, flip: bool,
                 progress: bool = True) -> tuple[Tensor, Tensor]:
    """E(x) of every image of ``data`` (then of every mirrored image when ``flip``), on the CPU, and the labels."""
    from torch.utils.data import DataLoader

    from gentool.progress import make_progress

    space.require_weights()
    loader = DataLoader(data, batch_size=BATCH, shuffle=False, num_workers=0)
    out, mirrored, labels = [], [], []
    with make_progress(transient=True) as bar:
        task = bar.add_task(f"encoding {len(data)} images", total=len(loader), visible=progress)
        for x, y in loader:
            x = x.to(device, torch.float32)
            out.append(space.encode_raw(x).cpu())
            if flip:
                mirrored.append(space.encode_raw(x.flip(-1)).cpu())
            labels.append(torch.as_tensor(y, dtype=torch.int64))
            bar.advance(task)
    labels_all = torch.cat(labels)
    if flip:
        return torch.cat(out + mirrored), torch.cat([labels_all, labels_all])
    return torch.cat(out), labels_all


def latent_split(recipe: Any, registry: Any, space: LatentSpace, split: str, device: torch.device, *,
                 log: Callable[[str], None] = print, progress: bool = True) -> tuple[Tensor, Tensor, list]:
    """The unscaled latents and labels of ``split`` from the cache, encoding them first when needed; and the classes."""
    space.require_weights()  # before any work: an autoencoder without weights says how to get them
    spec = recipe.data
    factory = registry.get("data_source", spec.name).factory
    options = dict(spec.options)
    flip = bool(options.get("random_flip")) and split == "train"
    if "random_flip" in options:
        options["random_flip"] = False  # encoded as they are, and mirrored by the autoencoder (see above)
    data = factory(split, **options)
    key = cache_key(recipe, space, split, data, flip)
    path = cache_path(recipe, key)
    found = read_cache(path, key, log)
    if found is None:
        log(f"latent cache: encoding the {split} split ({len(data)} images{', and their mirror images' if flip else ''})"
            f" with autoencoder {space.name!r} into {path}")
        z, y = encode_split(space, data, device, flip, progress)
        write_cache(path, z, y, key)
        found = (z, y)
    return found[0], found[1], list(getattr(data, "classes", []) or [])


def measure_scale(latents: Tensor) -> float:
    """s = 1 / std of the latents over every dimension at once (Rombach et al. 2022's scale factor), in float64."""
    std = float(latents.double().std())
    if not std > 0:
        raise ValueError(f"the latents have standard deviation {std}: an autoencoder that maps every image to one "
                         "point cannot be scaled to unit variance")
    return 1.0 / std
