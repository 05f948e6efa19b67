"""Built-in data sources: MNIST, Fashion-MNIST, CIFAR-10, image folders,
Hugging Face data sets and a tiny synthetic set.

The component modules (and torch) are imported when the hook runs or a name
is first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

import gentool
from gentool import lazy_names

_load, __getattr__ = lazy_names(globals(), {
    "fashion_mnist": ".fashion_mnist", "mnist": ".mnist", "cifar10": ".cifar", "image_folder": ".image_folder",
    "hf_dataset": ".hf_dataset", "toy": ".toy"})


@gentool.hookimpl
def gentool_register_data_sources(register):
    for name, factory in _load().items():
        register(name, factory)
