"""Evaluation: FID, IS, KID, precision/recall (through torch-fidelity), test loss and bits/dim.

* :func:`evaluate` computes the metrics of a built run and returns a JSON-ready report
  (``gentool eval`` is a thin layer over it).
* :func:`evaluate_in_training` is what the train loop calls every ``[eval] every`` steps.
* :mod:`gentool.evaluation.bpd` holds the variational bound (Ho et al. eq. 5).
* :mod:`gentool.evaluation.reference` caches the features of data splits.
"""

from gentool.evaluation.evaluate import default_report_path, evaluate, evaluate_in_training, write_report
from gentool.evaluation.features import (FeatureExtractorError, FeatureWeightsUnavailable, UInt8Images, build_extractor,
                                        to_rgb_uint8)

__all__ = [
    "FeatureExtractorError",
    "FeatureWeightsUnavailable",
    "UInt8Images",
    "build_extractor",
    "default_report_path",
    "evaluate",
    "evaluate_in_training",
    "to_rgb_uint8",
    "write_report",
]
