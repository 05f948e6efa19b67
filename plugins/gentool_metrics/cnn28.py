"""A small CNN feature extractor and classifier for 28x28 grey images (MNIST, Fashion-MNIST).

Inception-v3 features are the standard for FID, but its weights must be
downloaded and it is slow on the CPU. ``gentool-cnn28`` is a four-layer CNN
(batch-normalised 3x3 convolutions, 28 -> 14 -> 7, global average pooling)
whose weights are either drawn from a fixed seed (random features: numbers are
comparable between runs that use the same seed, never with papers) or loaded
from a safetensors file written by :func:`train_classifier` (``gentool
features train DATA``): a classifier trained on the data set, whose features
and logits mean something, and which gives class accuracy of samples.

It follows torch-fidelity's contract: uint8 images ``[B, 3, H, W]`` in,
a tuple with one tensor per requested feature out. Colour images are turned
grey by averaging the channels; other sizes are resized to 28x28.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from gentool import atomic_write_bytes, check_writable

NAME = "gentool-cnn28"
SIZE = 28
FEATURES = ("pool", "logits")
FORMAT = "gentool-cnn28/2"  # the weights file's metadata "format": bump when _net changes


def _net(num_classes: int) -> nn.Sequential:
    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *conv(1, 32), nn.MaxPool2d(2),  # 28 -> 14
        *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2),  # 14 -> 7
        *conv(64, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # "pool": 128 features
        nn.Linear(128, num_classes),  # "logits"
    )


HEAD = "net.16.weight"  # the state-dict key of the final Linear layer's weight (its rows: the classes)


def weight_keys(num_classes: int = 10) -> frozenset[str]:
    """The state-dict keys of :func:`_net` (weights and batch-norm statistics)."""
    return frozenset(_net(num_classes).state_dict())


def cache_dir() -> Path:
    """``$GENTOOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/gentool``, else ``~/.cache/gentool``."""
    if os.environ.get("GENTOOL_CACHE_DIR"):
        return Path(os.environ["GENTOOL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gentool"


def default_weights_path(data: str) -> Path:
    """Where ``gentool features train DATA`` saves, and where evaluation looks by default."""
    return cache_dir() / "features" / f"{NAME}-{data}.safetensors"


def train_command(data: str) -> str:
    return f"gentool features train {data or 'fashion_mnist'}"


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
        data: the data set the weights are for, named in the hint of an untrained extractor.

    Attributes: ``trained`` (weights from a file), ``weights_path`` (that file, or ""),
    ``metadata`` (the file's: data, test_accuracy, ...) and ``untrained_hint`` (how to train it).
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, seed: int = 0,
                 num_classes: int = 10, data: str = "", **kwargs):
        super().__init__(name, features_list)
        state, self.metadata = None, {}
        if feature_extractor_weights_path:
            state, self.metadata = load_weights(feature_extractor_weights_path)
            num_classes = state[HEAD].shape[0]
        with torch.random.fork_rng(devices=[]):  # seeded weights, the global RNG untouched
            torch.manual_seed(seed)
            self.net = _net(num_classes)
        if state is not None:
            self.load_state_dict(state)
        self.trained = state is not None
        self.weights_path = str(feature_extractor_weights_path or "")
        self.num_classes = num_classes
        self.untrained_hint = (f"{NAME} has random weights; train it with `{train_command(data)}` "
                               f"(saved to {default_weights_path(data or 'fashion_mnist')}) or pass --feature-weights")
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


def load_weights(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a :func:`train_classifier` safetensors file (no pickle); errors name the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {NAME} weights file not found")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - truncated, not a safetensors file, ...
        raise ValueError(f"{path}: not a {NAME} weights file ({type(exc).__name__}: {exc}); "
                         f"make one with `{train_command(metadata_data(path))}`") from None
    head = state.get(HEAD)
    if head is None or metadata.get("format") != FORMAT or set(state) != {f"net.{k}" for k in weight_keys(head.shape[0])}:
        raise ValueError(f"{path}: not a {FORMAT} weights file (wrong keys or format {metadata.get('format')!r}); "
                         f"make one with `{train_command(metadata_data(path))}`")
    if metadata.get("steps", "1").lstrip("-").isdigit() and int(metadata["steps"]) < 1:
        raise ValueError(f"{path}: trained for {metadata['steps']} steps, so its weights are untrained; "
                         f"make one with `{train_command(metadata_data(path))}`")
    return state, metadata


def metadata_data(path: Path) -> str:
    """The data-set name in a default weights file's name (``gentool-cnn28-mnist.safetensors``), else ""."""
    stem = Path(path).name.removesuffix(".safetensors")
    return stem[len(NAME) + 1:] if stem.startswith(NAME + "-") else ""


def as_uint8(dataset, indices: list[int] | None = None) -> tuple[Tensor, Tensor]:
    """uint8 images ``[N, 1 or 3, H, W]`` and labels of a gentool data set (quantised as evaluation does)."""
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if isinstance(images, Tensor) and images.dtype == torch.uint8 and getattr(dataset, "image_size", None) is None:
        idx = slice(None) if indices is None else torch.as_tensor(indices)
        return images[idx], labels[idx].to(torch.int64)
    indices = range(len(dataset)) if indices is None else indices
    x = torch.stack([torch.as_tensor(dataset[i][0]) for i in indices])
    y = torch.tensor([int(dataset[i][1]) for i in indices])
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8), y


@torch.no_grad()
def accuracy(fx: CNN28, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Fraction of uint8 ``images`` whose arg-max logit is their label, through ``fx`` as evaluation calls it."""
    fx = fx.eval()
    hits = 0
    for i in range(0, len(images), batch_size):
        logits = CNN28.forward(fx, images[i:i + batch_size].expand(-1, 3, -1, -1))[fx.features_list.index("logits")]
        hits += int((logits.argmax(1).cpu() == labels[i:i + batch_size]).sum())
    return hits / max(len(images), 1)


def train_classifier(
    dataset,
    path: str | Path,
    *,
    test=None,
    num_classes: int = 10,
    steps: int = 4000,
    batch_size: int = 128,
    lr: float = 2e-3,
    flip: bool = False,
    seed: int = 0,
    data: str = "",
    device: str | torch.device = "cpu",
    log=None,
) -> dict[str, float | str]:
    """Train the CNN as a classifier on ``(image [-1, 1], label)`` pairs and save it as safetensors.

    AdamW with a one-cycle learning rate (peak ``lr``) on random batches of the
    quantised uint8 images evaluation sees; with ``flip`` each image is mirrored
    left-right with probability 1/2 (for data whose mirror images keep their
    class, such as garments). The file is what ``--feature-weights`` loads,
    and what evaluation finds by default at :func:`default_weights_path`.
    Returns ``{"path", "train_accuracy", "test_accuracy" (if ``test``), "steps", "flip"}``;
    the test accuracy is computed through the saved extractor, as ``gentool eval`` does.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps = {steps}, batch_size = {batch_size}: both must be at least 1 "
                         "(the classifier would be saved untrained)")
    check_writable(path, _file_size(num_classes))  # a read-only folder or a full disk fails now, not after training
    x_all, y_all = as_uint8(dataset)
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _net(num_classes).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    net.train()
    for step in range(steps):
        idx = torch.randint(len(x_all), (batch_size,), generator=g)
        xb = x_all[idx]
        if flip:
            xb = torch.where((torch.rand(batch_size, generator=g) < 0.5)[:, None, None, None], xb.flip(-1), xb)
        loss = F.cross_entropy(net(to_input(xb).to(device)), y_all[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step + 1) % max(steps // 10, 1) == 0:
            log(f"step {step + 1}/{steps}: loss {loss.item():.3f}")
    fx = CNN28(NAME, list(FEATURES), num_classes=num_classes, data=data)
    fx.net.load_state_dict(net.cpu().state_dict())
    fx.eval()
    result: dict[str, float | str] = {"steps": steps, "flip": flip}
    keep = torch.randperm(len(x_all), generator=g)[:10000]
    result["train_accuracy"] = accuracy(fx, x_all[keep], y_all[keep])
    if test is not None:
        result["test_accuracy"] = accuracy(fx, *as_uint8(test))
    save_weights(fx, path, {"data": data, "num_classes": str(num_classes), "steps": str(steps), "flip": str(flip),
                            **{k: f"{v:.6f}" for k, v in result.items() if k.endswith("accuracy")}})
    result["path"] = str(path)
    return result


def _file_size(num_classes: int) -> int:
    """The bytes of a weights file's tensors (its header adds a few kilobytes)."""
    return sum(t.numel() * t.element_size() for t in _net(num_classes).state_dict().values())


def save_weights(fx: CNN28, path: str | Path, metadata: dict[str, str]) -> Path:
    """Write the extractor's state as safetensors, atomically (:func:`gentool.atomic.atomic_write_bytes`)."""
    from safetensors.torch import save

    state = {k: v.contiguous() for k, v in fx.state_dict().items()}
    header = {"format": FORMAT, **{k: str(v) for k, v in metadata.items()}}
    return atomic_write_bytes(path, save(state, metadata=header))


__all__ = ["CNN28", "accuracy", "as_uint8", "default_weights_path", "load_weights", "train_classifier"]
