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

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset


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

    def indices(self, step: int) -> list[int]:
        epoch, b = divmod(step, self.per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        batch = perm[b * self.batch_size : (b + 1) * self.batch_size]
        per_rank = self.batch_size // self.world
        return batch[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()

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
