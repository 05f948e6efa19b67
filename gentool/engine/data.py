"""Deterministic batches: the data order is a function of (seed, step) alone.

Each epoch is a fresh permutation drawn from ``seed + epoch``; step ``k``
reads batch ``k mod batches_per_epoch`` of epoch ``k // batches_per_epoch``.
So resuming at step ``k`` needs no saved loader state, and under
torch.distributed each rank reads its own slice of the same global batch.
The loader has its own generator, so creating it never draws from torch's
global RNG (whose state a checkpoint restores). Random augmentation in
worker processes (``num_workers > 0``) is seeded per loader start, so it
repeats exactly only with ``num_workers = 0``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gentool.engine import distributed
from gentool.recipe import RecipeError


class StepBatchSampler:
    """Yields lists of indices for steps ``start_step, start_step + 1, ...`` forever."""

    def __init__(self, n: int, batch_size: int, *, seed: int, start_step: int = 0, rank: int = 0, world: int = 1):
        if n < batch_size:
            raise ValueError(f"the data set has {n} images, fewer than one batch of {batch_size}")
        if batch_size % world:
            raise ValueError(f"train.batch_size ({batch_size}) must divide evenly over {world} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world = start_step, rank, world
        self.per_epoch = n // batch_size  # drop the last partial batch
        per_rank = batch_size // world
        self.rows = slice(rank * per_rank, (rank + 1) * per_rank)  # this rank's share of a global batch
        self._perm: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of epoch ``epoch``: ``randperm(n)`` seeded ``seed + epoch`` (drawn once per epoch)."""
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch)))
        return self._perm[1]

    def indices(self, step: int) -> list[int]:
        epoch, b = divmod(step, self.per_epoch)
        return self.permutation(epoch)[b * self.batch_size : (b + 1) * self.batch_size][self.rows].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1


def step_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world: int = 1,
) -> Iterator:
    """An endless iterator of ``(images, labels)`` batches starting at ``start_step``."""
    sampler = StepBatchSampler(len(dataset), batch_size, seed=seed, start_step=start_step, rank=rank, world=world)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + start_step * 7919 + rank)  # worker seeds
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                        persistent_workers=num_workers > 0, generator=generator)
    return iter(loader)


def device_batches(
    dataset: Any,
    batch_size: int,
    *,
    seed: int,
    device: torch.device | str,
    start_step: int = 0,
    rank: int = 0,
    world: int = 1,
    max_bytes: int | None = None,
) -> Iterator[tuple[Tensor, Tensor]] | None:
    """Endless ``(images, labels)`` batches gathered on ``device`` from a copy held there.

    For data sets that fit (Fashion-MNIST: 47 MB, CIFAR-10: 154 MB as uint8):
    the images go to the device once, as stored (uint8 stays uint8), and each
    step is one index gather, with no worker processes, pinned buffers or
    host-to-device copy. The order is exactly that of
    :func:`step_loader` (epoch ``e`` is ``randperm(n)``
    seeded ``seed + e``; step ``k`` takes batch ``k mod (n // batch_size)``;
    rank ``r`` of ``world`` takes the ``r``-th slice of that global batch).
    Random flips, when the data set asks for them, are drawn on the device
    from a generator seeded by ``(seed, step)``: the loader's distribution, not
    its draws, and a function of the step alone, so a resumed run flips
    exactly as an uninterrupted one.

    Returns ``None`` when the data set is not an in-memory image tensor (a
    :class:`gentool.interfaces.InMemoryImages`), needs per-item resizing, or is
    larger than ``max_bytes`` (default: a quarter of the free device memory
    on CUDA).
    """
    device = torch.device(device)
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor) or images.ndim != 4:
        return None
    size = getattr(dataset, "image_size", None)
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        return None
    if max_bytes is None:
        max_bytes = torch.cuda.mem_get_info(device)[0] // 4 if device.type == "cuda" else 1 << 62
    if images.numel() * images.element_size() > max_bytes:
        return None
    sampler = StepBatchSampler(len(images), batch_size, seed=seed, start_step=start_step, rank=rank, world=world)
    return _gather(images.to(device), labels.to(device, torch.int64), sampler,
                   bool(getattr(dataset, "random_flip", False)))


def _gather(images: Tensor, labels: Tensor, sampler: StepBatchSampler, flip: bool) -> Iterator:
    flip_gen = torch.Generator(device=images.device) if flip else None
    epoch, perm = -1, None
    step = sampler.start_step
    while True:
        e, b = divmod(step, sampler.per_epoch)
        if e != epoch:  # the sampler's permutation, moved to the device once per epoch
            epoch, perm = e, sampler.permutation(e).to(images.device)
        idx = perm[b * sampler.batch_size : (b + 1) * sampler.batch_size][sampler.rows]
        x = images[idx]
        x = x.to(torch.float32) / 127.5 - 1.0 if x.dtype == torch.uint8 else x.to(torch.float32)
        if flip_gen is not None:  # drawn for the global batch, so the flips do not depend on the world size
            flip_gen.manual_seed(sampler.seed * 1_000_003 + step)  # sets a seed on the host: no device sync
            mask = (torch.rand(sampler.batch_size, device=x.device, generator=flip_gen) < 0.5)[sampler.rows]
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        yield x, labels[idx]
        step += 1


def check_image_shape(run, got: tuple[int, ...] | None) -> None:
    """The data set's images (``got``: C, H, W; None: no images) must have the shape the denoiser was built for
    (its ``image_shape``, when it says), once the recipe's autoencoder has encoded them."""
    want = getattr(run.model.denoiser, "image_shape", None)
    if got is None:
        return
    shape = lambda s: "x".join(map(str, s))  # noqa: E731
    space = getattr(run, "space", None)
    latent, encoded = tuple(got), ""
    if space is not None and not space.identity:
        try:
            latent = space.latent_shape(tuple(got))
        except ValueError as exc:
            raise RecipeError(run.recipe.source, f"autoencoder ({space.name})", f"cannot encode the data set's "
                              f"{shape(got)} images: {exc}") from None
        encoded = f", which autoencoder {space.name!r} encodes to {shape(latent)} latents,"
    if want is None:
        return
    want = tuple(want)
    if latent != want:
        raise RecipeError(run.recipe.source, f"denoiser ({run.recipe.denoiser.name})", f"the data set's images are "
                          f"{shape(got)} (channels x height x width){encoded} but the denoiser is built for "
                          f"{shape(want)}; make them match in [denoiser] (or set the data source's image size / "
                          "channels where it has them)")


def check_split_shape(run, n: int, image_shape: tuple[int, ...] | None) -> None:
    """A train split of ``n`` images of ``image_shape`` (C, H, W) must fit the recipe: the denoiser's image
    shape, and at least one batch of images.

    Called by :func:`check_data` and by ``gentool check`` (on a Run whose networks are on the meta device,
    with the shape a data source tells without loading its images).
    """
    check_image_shape(run, image_shape)
    tr = run.recipe.train
    if tr.steps > 0 and n < tr.batch_size:
        raise RecipeError(run.recipe.source, "train.batch_size", f"{tr.batch_size} is more than the {n} "
                          f"images of the train split; use at most {n}", tr.batch_size)


def check_data(run, data) -> None:
    """The loaded train split must fit the recipe (:func:`check_split_shape`); called by training."""
    n = len(data)
    check_split_shape(run, n, tuple(data[0][0].shape) if n else None)


def train_batches(run, dist_info: distributed.Dist, log: Callable[[str], None]) -> tuple[Iterator, bool]:
    """The training batches from ``run.step`` on, and whether their labels still need checking.

    Per ``train.data_on_device``: gathered from a copy of the train split on
    the device (:func:`device_batches`), or a :func:`step_loader`.
    The labels of an in-memory data set are checked once, here; others arrive
    with each batch on the host, where the engine checks them without waiting
    on the device.
    Under torchrun rank 0 builds the split first, so a download happens once.
    """
    tr, seed = run.recipe.train, run.recipe.run.seed
    if not dist_info.main:
        distributed.barrier()
    data = run.dataset("train")
    check_data(run, data)
    data = run.latent_dataset("train", log=log)  # the images themselves, or their latents (encoded once, cached)
    if dist_info.main:
        distributed.barrier()
    conditional = run.model.conditioner is not None
    held = isinstance(getattr(data, "labels", None), torch.Tensor)
    if conditional and held:
        run.model.check_labels(data.labels)  # all of them, once, before the first step
    want = tr.data_on_device if tr.data_on_device != "auto" else run.device.type == "cuda"
    if want:
        batches = device_batches(data, tr.batch_size, seed=seed, device=run.device, start_step=run.step,
                                 rank=dist_info.rank, world=dist_info.world)
        if batches is not None:
            log(f"data: the train split ({len(data)} images) is held on {run.device}; batches are gathered there")
            return batches, False
        log("data: the train split is not an in-memory image tensor that fits on the device; using a data loader")
    loader = step_loader(data, tr.batch_size, seed=seed, start_step=run.step, num_workers=tr.num_workers,
                         pin_memory=run.device.type == "cuda", rank=dist_info.rank, world=dist_info.world)
    return loader, conditional and not held
