"""FID, IS, KID and precision/recall from features, with torch-fidelity's own formulas.

* FID (Heusel et al. 2017): |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).
* IS (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), mean and std over 10 splits.
* KID (Binkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel,
  mean and std over 100 subsets of min(1000, n) images.
* Precision and recall (Kynkaenniemi et al. 2019): k = 3 nearest-neighbour
  manifolds, with as many real images as generated ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool.evaluation.features import feature_layer

SAMPLE_METRICS = ("fid", "isc", "kid", "prc")
REFERENCE_METRICS = ("fid", "kid", "prc")  # the ones comparing with data


def fid(f1: Tensor, f2: Tensor) -> float:
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    value = fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), False)
    return float(next(iter(value.values())))


def isc(logits: Tensor, seed: int) -> dict[str, float]:
    from torch_fidelity.metric_isc import isc_features_to_metric

    out = isc_features_to_metric(logits, splits=min(10, logits.shape[0]), shuffle=True, rng_seed=seed)
    return {"isc": out["inception_score_mean"], "isc_std": out["inception_score_std"]}


def kid(f1: Tensor, f2: Tensor, seed: int) -> dict[str, float]:
    from torch_fidelity.metric_kid import kid_features_to_metric

    size = min(1000, f1.shape[0], f2.shape[0])
    out = kid_features_to_metric(f1, f2, kid_subsets=100, kid_subset_size=size, rng_seed=seed, verbose=False)
    return {"kid": out["kernel_inception_distance_mean"], "kid_std": out["kernel_inception_distance_std"]}


def prc(f1: Tensor, f2: Tensor, seed: int) -> dict[str, float]:
    from torch_fidelity.metric_prc import prc_features_to_metric

    if f2.shape[0] > f1.shape[0]:  # as many real as generated images, drawn with a fixed seed
        keep = torch.randperm(f2.shape[0], generator=torch.Generator().manual_seed(seed))[: f1.shape[0]]
        f2 = f2[keep]
    out = prc_features_to_metric(f1, f2, prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=True, verbose=False)
    return {"precision": out["precision"], "recall": out["recall"], "f_score": out["f_score"]}


def sample_metrics(metrics: list[str], fx, samples: dict[str, Tensor], reference: dict[str, Tensor] | None,
                   seed: int = 2020) -> dict[str, float]:
    """The requested sample metrics from generated (``samples``) and real (``reference``) features."""
    out: dict[str, float] = {}
    for metric in metrics:
        layer = feature_layer(fx, metric)
        if metric == "fid":
            out["fid"] = fid(samples[layer], reference[layer])
        elif metric == "isc":
            out.update(isc(samples[layer], seed))
        elif metric == "kid":
            out.update(kid(samples[layer], reference[layer], seed))
        elif metric == "prc":
            out.update(prc(samples[layer], reference[layer], seed))
    return {k: (float(v) if math.isfinite(float(v)) else float("nan")) for k, v in out.items()}
