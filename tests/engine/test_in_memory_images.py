"""The data-source protocol InMemoryImages: any data set holding its images as one tensor gets device batches.

The data set here is written against the documented protocol only (no class
of the built-in data plugin), as a third-party data source would be.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from gentool.engine.data import device_batches, step_loader
from gentool.interfaces import InMemoryImages


class Held(Dataset):
    """uint8 images and labels in memory; items in [-1, 1] as the protocol says."""

    def __init__(self, n: int = 12):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g)
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i].float() / 127.5 - 1.0, int(self.labels[i])


class NotHeld(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        return torch.zeros(1, 4, 4), 0


def test_a_protocol_data_set_gets_the_loader_s_batches_on_the_device():
    data = Held()
    assert isinstance(data, InMemoryImages) and not isinstance(NotHeld(), InMemoryImages)
    fast = device_batches(data, 4, seed=5, device="cpu", start_step=2)
    plain = step_loader(data, 4, seed=5, start_step=2)
    for _ in range(5):  # crosses an epoch (3 batches per epoch)
        (x, y), (x_ref, y_ref) = next(fast), next(plain)
        torch.testing.assert_close(x, x_ref)
        assert torch.equal(y, y_ref)


def test_other_data_sets_use_the_loader():
    assert device_batches(NotHeld(), 4, seed=0, device="cpu") is None
