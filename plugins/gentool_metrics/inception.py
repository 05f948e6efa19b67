"""torch-fidelity's Inception-v3 (``inception-v3-compat``), with weights from a local file.

The features match the TensorFlow Inception of the original FID code, so the
numbers are comparable with papers (Ho et al. 2020: FID 3.17, IS 9.46 on
CIFAR-10). Its weights are downloaded by torch-fidelity on first use; where
there is no internet, ``weights_path`` names a local copy of
``weights-inception-2015-12-05-6726825d.pth``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

NAME = "inception-v3-compat"
#: every feature the four metrics need: "2048" (fid, kid, prc) and "logits_unbiased" (isc)
FEATURES = ["2048", "logits_unbiased"]


def inception_v3(*, weights_path: str = "") -> FeatureExtractorInceptionV3:
    """torch-fidelity's Inception-v3 (the FID/IS standard), optionally with local weights.

    Args:
        weights_path: local file with torch-fidelity's Inception weights
            (``weights-inception-2015-12-05-6726825d.pth``); empty: download them
            (or use the copy already in torch's hub cache).
    """
    if not weights_path:
        try:
            return FeatureExtractorInceptionV3(NAME, FEATURES, verbose=False)
        except Exception as exc:  # noqa: BLE001 - no internet, proxy, disk full ...
            cache = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]
            raise RuntimeError(
                f"could not get the Inception weights from {URL_INCEPTION_V3} ({type(exc).__name__}: {exc}); "
                f"without internet, pass a local copy with --feature-weights PATH ([eval] feature_weights) "
                f"or put it at {cache}"
            ) from None
    check_weights(weights_path)
    try:
        return FeatureExtractorInceptionV3(NAME, FEATURES, feature_extractor_weights_path=str(weights_path), verbose=False)
    except Exception as exc:  # noqa: BLE001 - wrong shapes, missing keys
        raise ValueError(f"{weights_path}: not usable as Inception-v3 weights ({type(exc).__name__}: {exc})") from None


def check_weights(path: str | Path) -> None:
    """The file exists and holds a plain state dict (read safely, ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Inception weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise ValueError(f"{path}: not an Inception-v3 state dict (no 'fc.weight')")
