"""torch-fidelity's Inception-v3 (``inception-v3-compat``), with weights from a local file.

The features match the TensorFlow Inception of the original FID code, so the
numbers are comparable with papers (Ho et al. 2020: FID 3.17, IS 9.46 on
CIFAR-10). Its weights are downloaded by torch-fidelity on first use; where
there is no internet, ``weights_path`` names a local copy of
``weights-inception-2015-12-05-6726825d.pth``.

torch-fidelity is imported when the extractor is built, not with the module:
it imports torchvision, whose import pulls in ``torch._dynamo`` (about 2.5 s),
and registering the extractor (every command's plugin loading) needs only
this function.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from gentool import WeightsFileError, read_state_dict, safe_torch_load

NAME = "inception-v3-compat"
#: every feature the four metrics need: "2048" (fid, kid, prc) and "logits_unbiased" (isc)
FEATURES = ["2048", "logits_unbiased"]


def inception_v3(*, weights_path: str = "") -> nn.Module:
    """torch-fidelity's Inception-v3 (the FID/IS standard), optionally with local weights.

    Every weights file is read with ``weights_only=True`` (torch hub's cached
    copy included) and a local file is read once: the state dict checked is the
    one used.

    Args:
        weights_path: local file with torch-fidelity's Inception weights
            (``weights-inception-2015-12-05-6726825d.pth``); empty: download them
            (or use the copy already in torch's hub cache).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import (  # start-up: see the module's docstring
        URL_INCEPTION_V3,
        FeatureExtractorInceptionV3,
    )

    if not weights_path:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[-1]
        try:
            with safe_torch_load():
                return FeatureExtractorInceptionV3(NAME, FEATURES, verbose=False)
        except pickle.UnpicklingError:  # weights_only refused the cached file: never unpickled
            raise WeightsFileError(f"{cache}: refused: it holds objects other than tensors and plain values, which "
                                   "gentool never unpickles (it could run code); delete it, or pass a plain state "
                                   "dict with --feature-weights PATH") from None
        except Exception as exc:  # noqa: BLE001 - no internet, proxy, disk full ...
            raise RuntimeError(
                f"could not get the Inception weights from {URL_INCEPTION_V3} ({type(exc).__name__}: {exc}); "
                f"without internet, pass a local copy with --feature-weights PATH ([eval] feature_weights) "
                f"or put it at {cache}"
            ) from None
    state = check_weights(weights_path)
    try:
        with safe_torch_load({weights_path: state}):  # torch-fidelity gets the state dict read above
            return FeatureExtractorInceptionV3(NAME, FEATURES, feature_extractor_weights_path=str(weights_path),
                                               verbose=False)
    except Exception as exc:  # noqa: BLE001 - wrong shapes, missing keys
        raise WeightsFileError(f"{weights_path}: not usable as Inception-v3 weights ({type(exc).__name__}: "
                               f"{exc})") from None


def check_weights(path: str | Path) -> dict:
    """The file's state dict, read once and safely (``weights_only=True``); it must be Inception-v3's."""
    state = read_state_dict(path, what="Inception weights")
    if "fc.weight" not in state:
        raise WeightsFileError(f"{path}: not an Inception-v3 state dict (no 'fc.weight')")
    return state
