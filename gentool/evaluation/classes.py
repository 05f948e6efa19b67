"""Class accuracy of class-conditional samples, and the real-data floor of the sample metrics.

Class accuracy: the fraction of samples that a classifier trained on the data
(a feature extractor with a ``logits`` feature of one logit per class, e.g. a
trained ``gentool-cnn28``) assigns to the class they were asked for: the arg-max
of the logits equals the requested label.

The real-data floor answers "what would perfect samples score at this n?":
the same metrics computed for ``n`` real images of the test split (a seeded
random subset) in place of samples, with the train split as their reference.
Its class accuracy is the classifier's accuracy on those test images.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gentool.errors import GentoolError
from gentool.evaluation.features import UInt8Images, concat, extract

LOGITS = "logits"


class ClassifierError(GentoolError, ValueError):
    """The feature extractor cannot give class accuracy (no logits, untrained, wrong number of classes)."""


def class_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose arg-max logit is their label."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} logits rows but {labels.shape[0]} labels")
    hits = int((logits.argmax(1) == labels.to(logits.device)).sum())  # an exact count, not a float32 mean
    return hits / len(labels) if len(labels) else float("nan")


def check_classifier(fx, num_classes: int) -> None:
    """Raise :class:`ClassifierError` unless ``fx`` is a trained classifier of ``num_classes`` classes."""
    name = fx.get_name()
    if not num_classes:
        raise ClassifierError("class_acc needs a class-conditional run ([conditioner] with num_classes)")
    if LOGITS not in fx.get_requested_features_list():
        raise ClassifierError(f"class_acc needs a classifier: feature extractor {name!r} has no {LOGITS!r} feature "
                              f"(use --feature-extractor gentool-cnn28 on 28x28 data)")
    if not getattr(fx, "trained", True):
        raise ClassifierError(f"class_acc needs trained classifier weights: {getattr(fx, 'untrained_hint', name)}")
    width = getattr(fx, "num_classes", None)
    if width is not None and width != num_classes:
        raise ClassifierError(f"class_acc: feature extractor {name!r} classifies {width} classes, the run has {num_classes}")


def test_subset(n_total: int, n: int, seed: int = 0) -> list[int]:
    """``n`` seeded random indices of ``range(n_total)`` (all of them, in order, if n >= n_total)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted(torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].tolist())


def real_features(run, fx, *, n: int, batch_size: int = 250, split: str = "test") -> tuple[dict[str, Tensor], Tensor]:
    """Features and labels of ``n`` real images of ``split`` (un-augmented, a seeded subset)."""
    from gentool.evaluation.reference import reference_dataset

    data = reference_dataset(run, split)
    indices = test_subset(len(data), n)
    images = UInt8Images(data, indices)
    parts, labels = [], []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([images[i] for i in range(start, min(start + batch_size, len(images)))])
        parts.append(extract(fx, batch.to(run.device)))
        labels.extend(int(data[indices[i]][1]) for i in range(start, start + batch.shape[0]))
    return concat(parts), torch.tensor(labels, dtype=torch.int64)
