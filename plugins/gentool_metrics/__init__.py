"""Built-in feature extractors for FID, IS, KID and precision/recall.

* ``inception-v3-compat``: torch-fidelity's Inception-v3, the standard of papers.
* ``gentool-cnn28``: a small CNN for 28x28 grey images, fast on the CPU and
  usable without any download (seeded random weights or a trained classifier).

Any other extractor torch-fidelity knows (``vgg16``, ``clip-vit-b-32``, ...)
can be named in ``[eval] feature_extractor`` without being registered here.
"""

import sys
import types

import gentool

_LAZY = {"CNN28": "gentool_metrics.cnn28", "default_weights_path": "gentool_metrics.cnn28",
         "train_classifier": "gentool_metrics.cnn28", "inception_v3": "gentool_metrics.inception"}


class _Package(types.ModuleType):
    """This package, whose ``cnn28`` stays the factory when the submodule ``gentool_metrics.cnn28`` is imported."""

    def __setattr__(self, name: str, value) -> None:
        if name == "cnn28" and isinstance(value, types.ModuleType):
            return  # the import system binds a loaded submodule to its parent's attribute; keep the factory
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def _module(name: str):
    """A component module, imported on first use (with torch), so loading plugins for ``gentool --help`` stays cheap."""
    import importlib

    return importlib.import_module(name)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cnn28(*, weights_path: str = "", data: str = "", seed: int = 0):
    """A small CNN classifier for 28x28 grey images (MNIST, Fashion-MNIST); no download needed.

    Args:
        weights_path: a safetensors file written by ``gentool features train``
            (a classifier trained on the data: its features and logits are
            meaningful, and it gives class accuracy); empty: the file that
            ``gentool features train DATA`` saved for the run's data set
            (``~/.cache/gentool/features/gentool-cnn28-DATA.safetensors``) if it
            exists, else random weights drawn from ``seed``.
        data: the data source the weights are for (evaluation passes the
            run's ``[data] name``); picks the default weights file.
        seed: seed of the random weights (numbers compare only between
            evaluations with the same seed).
    """
    module = _module("gentool_metrics.cnn28")
    register_with_torch_fidelity()
    CNN28, default_weights_path = module.CNN28, module.default_weights_path
    if not weights_path and data and default_weights_path(data).is_file():
        weights_path = str(default_weights_path(data))
    return CNN28("gentool-cnn28", ["pool", "logits"], feature_extractor_weights_path=weights_path or None, seed=seed,
                 data=data)


#: the images gentool-cnn28 is made for: ``gentool eval`` picks it by default for them
cnn28.image_shape = (1, 28, 28)


def register_with_torch_fidelity() -> None:
    """Make ``gentool-cnn28`` known to torch-fidelity by name (once per process).

    Done when :func:`cnn28` first builds the extractor; call it before naming
    ``"gentool-cnn28"`` to torch-fidelity yourself. Loading the plugins does not
    do it: torch-fidelity imports torchvision, and with it ``torch._dynamo``
    (about 2.5 s), which ``gentool check`` must not wait for.
    """
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    CNN28 = _module("gentool_metrics.cnn28").CNN28
    if "gentool-cnn28" not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor("gentool-cnn28", CNN28)


@gentool.hookimpl
def gentool_register_feature_extractors(register):
    register("inception-v3-compat", _module("gentool_metrics.inception").inception_v3)
    register("gentool-cnn28", cnn28)


@gentool.hookimpl
def gentool_register_commands(register):
    from gentool_metrics.features_cmd import features

    register("features", features)


__all__ = ["CNN28", "cnn28", "default_weights_path", "inception_v3", "register_with_torch_fidelity", "train_classifier"]
