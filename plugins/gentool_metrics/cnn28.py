"""A small CNN feature extractor for 28x28 grey images (MNIST, Fashion-MNIST).

Inception-v3 features are the standard for FID, but its weights must be
downloaded and it is slow on the CPU. ``gentool-cnn28`` is a three-layer CNN
whose weights are either drawn from a fixed seed (random features: numbers are
comparable between runs that use the same seed, never with papers) or loaded
from a file written by :func:`train_classifier` (a classifier trained on the
data set, whose features and logits mean something).

It follows torch-fidelity's contract: uint8 images ``[B, 3, H, W]`` in,
a tuple with one tensor per requested feature out. Colour images are turned
grey by averaging the channels; other sizes are resized to 28x28.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

NAME = "gentool-cnn28"
SIZE = 28
FEATURES = ("pool", "logits")
#: the state-dict keys of :func:`_net` (its layers 0, 3, 6 and 10 hold weights)
WEIGHT_KEYS = frozenset(f"{i}.{p}" for i in (0, 3, 6, 10) for p in ("weight", "bias"))


def _net(num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 14
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 7
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # "pool": 128 features
        nn.Linear(128, num_classes),  # "logits"
    )


def to_input(x: Tensor) -> Tensor:
    """uint8 ``[B, C, H, W]`` (C = 1 or 3) -> float ``[B, 1, 28, 28]`` in [-1, 1]."""
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{NAME} expects uint8 images [B, 1 or 3, H, W], got {x.dtype} {tuple(x.shape)}")
    x = x.float().mean(1, keepdim=True) / 127.5 - 1.0
    if x.shape[-2:] != (SIZE, SIZE):
        x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x


class CNN28(FeatureExtractorBase):
    """torch-fidelity feature extractor ``gentool-cnn28``: 128 pooled features and class logits.

    Args (torch-fidelity's convention, so ``calculate_metrics(feature_extractor="gentool-cnn28")`` works):
        name: the registered name.
        features_list: requested features, from ``("pool", "logits")``.
        feature_extractor_weights_path: a file from :func:`train_classifier` (None: seeded random weights).
        seed: seed of the random weights.
        num_classes: width of the logits (taken from the weights file when given).
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, seed: int = 0,
                 num_classes: int = 10, **kwargs):
        super().__init__(name, features_list)
        state = None
        if feature_extractor_weights_path:
            state = load_weights(feature_extractor_weights_path)
            num_classes = state["10.weight"].shape[0]
        with torch.random.fork_rng(devices=[]):  # seeded weights, the global RNG untouched
            torch.manual_seed(seed)
            self.net = _net(num_classes)
        if state is not None:
            self.net.load_state_dict(state)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        h = to_input(x.to(self.net[0].weight.device))
        pool = self.net[:-1](h)
        out = {"pool": pool, "logits": self.net[-1](pool)}
        return tuple(out[name].float() for name in self.features_list)


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Read a :func:`train_classifier` weights file safely; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {NAME} weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, ...
        raise ValueError(f"{path}: not a {NAME} weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or set(state) != WEIGHT_KEYS:
        raise ValueError(f"{path}: not a {NAME} weights file (expected the keys {sorted(WEIGHT_KEYS)})")
    return state


def train_classifier(
    dataset,
    path: str | Path,
    *,
    num_classes: int = 10,
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> Path:
    """Train the CNN as a classifier on ``(image [-1, 1], label)`` pairs and save its weights.

    The file is what ``weights_path`` of ``gentool-cnn28`` (``--feature-weights``) loads.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _net(num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(dataset), (batch_size,), generator=g).tolist()
        x = torch.stack([dataset[i][0] for i in idx])
        y = torch.tensor([int(dataset[i][1]) for i in idx])
        u8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # train on what evaluation sees
        loss = F.cross_entropy(net(to_input(u8)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
