"""Images to torch-fidelity features: uint8 conversion, extractor look-up, batched extraction.

torch-fidelity's extractors take uint8 images ``[B, 3, H, W]``; gentool's
images are floats in [-1, 1] with 1 or 3 channels. Grey images are repeated
to three channels (the extractors that want grey, like ``gentool-cnn28``,
average them back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gentool.errors import DOWNLOAD_ERRORS, GentoolError, brief
from gentool.evaluation.weights import HubCodeRefused, safe_torch_load
from gentool.registry import Registry, closest

METRIC_LAYERS = ("fid", "isc", "kid", "prc")


class FeatureExtractorError(GentoolError, ValueError):
    """An unknown feature extractor, or one that cannot give what a metric needs."""


class FeatureWeightsUnavailable(GentoolError, FileNotFoundError):
    """A feature extractor's pretrained weights could not be downloaded (no internet, a proxy ...)."""


def weights_unavailable(name: str, exc: BaseException) -> FeatureWeightsUnavailable:
    """The error for extractor ``name`` whose weights download raised ``exc``: the cause, and the way round it."""
    text = " ".join(str(exc).split())
    if "--feature-weights" in text:  # the extractor already said how to get round it
        return FeatureWeightsUnavailable(text)
    import torch.hub

    cause = brief(exc, limit=300)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return FeatureWeightsUnavailable(
        f"could not get the weights of feature extractor {name!r} ({cause}); without internet, pass a local "
        f"copy with --feature-weights PATH ([eval] feature_weights) or put the downloaded file in {cache}"
    )


def to_rgb_uint8(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` floats in [-1, 1] -> uint8 ``[B, 3, H, W]`` (grey repeated), on x's device.

    Quantised as a PNG file would be: round((x + 1) / 2 * 255).
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, 1 or 3, H, W] for feature extraction, got {tuple(x.shape)}")
    u8 = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return u8.expand(-1, 3, -1, -1).contiguous() if u8.shape[1] == 1 else u8


class UInt8Images(Dataset):
    """A gentool data set of ``(image [-1, 1], label)`` seen as torch-fidelity input: uint8 ``[3, H, W]``.

    ``indices`` picks a subset (e.g. a seeded random ``reference_n`` images).
    """

    def __init__(self, dataset, indices: list[int] | None = None) -> None:
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Tensor:
        image = self.dataset[self.indices[i]][0]
        return to_rgb_uint8(torch.as_tensor(image)[None])[0]


def torch_fidelity_extractors() -> dict:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    return FEATURE_EXTRACTORS_REGISTRY


def build_extractor(registry: Registry, name: str, weights: str | Path = "", metrics: Iterable[str] = METRIC_LAYERS,
                    *, data: str = ""):
    """The feature extractor ``name``, weights loaded: a registered one, else torch-fidelity's.

    A gentool factory receives ``weights`` as its ``weights_path`` option. Any
    problem with the weights file raises before anything else is computed,
    with the file named. Without ``weights`` the extractor downloads its own;
    a failed download raises :class:`FeatureWeightsUnavailable` (a
    ``FileNotFoundError``), which says how to pass a local copy instead.
    A factory with a ``data`` option is told the run's data source ``data``
    (e.g. to find weights trained on it).
    """
    weights = str(weights or "")
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: feature-extractor weights file not found (for {name!r})")
    try:
        with safe_torch_load():  # no weights file, torch hub's cache included, is ever unpickled
            if ("feature_extractor", name) in registry:
                return _from_registry(registry, name, weights, data)
            if name in torch_fidelity_extractors():
                return _from_torch_fidelity(name, weights, metrics)
    except HubCodeRefused as exc:
        known = ", ".join(sorted(registry.names("feature_extractor")))
        raise FeatureExtractorError(f"feature extractor {name!r}: {exc}; use one whose network gentool or "
                                    f"torch-fidelity ships: {known} or vgg16") from None
    except (GentoolError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the extractor's loader raised
        if weights and weights not in str(exc):
            raise FeatureExtractorError(f"{weights}: cannot load it as weights of feature extractor {name!r}: {exc}") from None
        if not weights and isinstance(exc, DOWNLOAD_ERRORS):  # no file given: the weights were being downloaded
            raise weights_unavailable(name, exc) from exc
        raise
    known = sorted(set(registry.names("feature_extractor")) | set(torch_fidelity_extractors()))
    near = closest(name, known)
    hint = f"did you mean {', '.join(map(repr, near))}? " if near else ""
    raise FeatureExtractorError(f"unknown feature extractor {name!r}; {hint}known: {', '.join(known)}")


def _from_registry(registry: Registry, name: str, weights: str, data: str = ""):
    from gentool.options import check_options, recipe_parameters

    factory = registry.get("feature_extractor", name).factory
    options = {"data": data} if data and "data" in recipe_parameters(factory) else {}
    if weights:
        if "weights_path" not in recipe_parameters(factory):
            raise FeatureExtractorError(f"feature extractor {name!r} takes no weights file (it has no weights_path option)")
        options["weights_path"] = weights
    try:
        return factory(**check_options(factory, options))
    except ValueError as exc:  # the plugin contract: a bad option or weights file (the default one included)
        if isinstance(exc, GentoolError):
            raise
        raise FeatureExtractorError(f"feature extractor {name!r}: {exc}") from None


def _from_torch_fidelity(name: str, weights: str, metrics: Iterable[str]):
    cls = torch_fidelity_extractors()[name]
    layers = []
    for metric in metrics:
        try:
            layer = cls.get_default_feature_layer_for_metric(metric)
        except (KeyError, NotImplementedError):
            continue
        if layer not in layers:
            layers.append(layer)
    if not layers:
        raise FeatureExtractorError(f"feature extractor {name!r} provides no features for {', '.join(metrics)}")
    return cls(name, layers, feature_extractor_weights_path=weights or None, verbose=False)


def feature_layer(fx, metric: str) -> str:
    """The feature ``metric`` uses, which ``fx`` must have been asked to compute."""
    try:
        layer = type(fx).get_default_feature_layer_for_metric(metric)
    except (KeyError, NotImplementedError):
        layer = None
    if layer is None or layer not in fx.get_requested_features_list():
        raise FeatureExtractorError(f"feature extractor {fx.get_name()!r} provides no features for metric {metric!r}")
    return layer


@torch.no_grad()
def extract(fx, images: Tensor) -> dict[str, Tensor]:
    """Features of one uint8 batch ``[B, 3, H, W]``, as ``{feature: float [B, D]}`` on the CPU."""
    out = fx(images)
    return {name: f.detach().float().flatten(1).cpu() for name, f in zip(fx.get_requested_features_list(), out)}


def concat(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Join per-batch feature dicts along the batch."""
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
