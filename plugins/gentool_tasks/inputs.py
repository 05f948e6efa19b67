"""Input images for the editing tasks: from the run's data set by index, or from image files.

Every image comes back as float32 ``[C, H, W]`` in [-1, 1] at the model's
shape (``run.image_shape``): files are converted to grey or RGB, their shorter
side resized to the model's size and the centre square cropped; data-set images
of another size are resized the same way.

torchvision is imported where an image is resized or read, not with the
module: its import pulls in ``torch._dynamo`` (about 2.5 s), and ``gentool
check`` loads every task.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def fit(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Resize (shorter side) and centre-crop ``[C, H, W]`` to ``shape``; match channels."""
    c, h, w = shape
    if x.shape[0] != c:
        if x.shape[0] == 1:
            x = x.expand(c, -1, -1)
        elif c == 1:
            x = x.mean(0, keepdim=True)  # RGB to grey
        else:
            raise ValueError(f"cannot turn a {x.shape[0]}-channel image into {c} channels")
    if tuple(x.shape[-2:]) != (h, w):
        from torchvision.transforms.v2 import functional as TF  # start-up: see the module's docstring

        x = TF.resize(x, min(h, w), antialias=True)
        x = TF.center_crop(x, [h, w])
    return x.contiguous()


def load_image_file(path: str | Path, shape: tuple[int, int, int]) -> Tensor:
    """An image file as float32 ``shape`` ``[C, H, W]`` in [-1, 1]."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as TF  # start-up: see the module's docstring

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im = im.convert("L" if shape[0] == 1 else "RGB")
            x = TF.pil_to_tensor(im).float() / 127.5 - 1.0
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file Pillow can read") from None
    return fit(x, shape).clamp(-1, 1)


def dataset_images(run, indices: list[int], split: str) -> tuple[Tensor, Tensor]:
    """Images ``[B, C, H, W]`` and labels ``[B]`` from the run's data set."""
    if run.recipe.data is None:
        raise ValueError(
            f"{run.recipe.source}: the recipe has no [data] table, so there is no data set to take "
            "inputs from; give image files instead (the task's `images` option)"
        )
    data = run.dataset(split)
    images, labels = [], []
    for i in indices:
        if not 0 <= i < len(data):
            raise ValueError(
                f"indices must be in 0..{len(data) - 1} (the {split} split has {len(data)} images), got {i}"
            )
        x, y = data[i]
        images.append(fit(torch.as_tensor(x, dtype=torch.float32), run.image_shape))
        labels.append(int(y))
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def load_inputs(
    run,
    *,
    indices: list[int],
    split: str = "test",
    images: list[str] = (),
    label: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The task's input images on ``run.device`` and their labels for a conditional model.

    ``images`` (file paths) win over ``indices`` (data-set positions). Labels are
    the data set's (``-1``, the null label, for files) unless ``label`` is
    given; they are ``None`` for an unconditional model.
    """
    if images:
        x = torch.stack([load_image_file(p, run.image_shape) for p in images])
        y = torch.full((len(images),), -1, dtype=torch.long)
    else:
        if not indices:
            raise ValueError("no inputs: give data-set `indices` or image files (`images`)")
        x, y = dataset_images(run, list(indices), split)
    if label is not None:
        if run.num_classes and not -1 <= label < run.num_classes:
            raise ValueError(f"label {label} is not a class of this model (0..{run.num_classes - 1}, or -1 for none)")
        y = torch.full_like(y, label)
    labels = y.to(run.device) if run.num_classes else None
    return x.to(run.device), labels


def class_labels(run, n: int, label: int | None) -> Tensor | None:
    """``n`` copies of ``label`` for a conditional model (``None``: the null label -1)."""
    if not run.num_classes:
        return None
    return torch.full((n,), -1 if label is None else label, dtype=torch.long, device=run.device)
