"""Built-in data sources: MNIST, Fashion-MNIST, CIFAR-10, image folders,
Hugging Face data sets and a tiny synthetic set.

The component modules (and torch) are imported when the hook runs or a name
is first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

import gentool

_NAMES = ("fashion_mnist", "mnist", "cifar10", "image_folder", "hf_dataset", "toy")


def _load() -> dict:
    from gentool_data.cifar import cifar10
    from gentool_data.fashion_mnist import fashion_mnist
    from gentool_data.hf_dataset import hf_dataset
    from gentool_data.image_folder import image_folder
    from gentool_data.mnist import mnist
    from gentool_data.toy import toy

    names = {"fashion_mnist": fashion_mnist, "mnist": mnist, "cifar10": cifar10, "image_folder": image_folder,
             "hf_dataset": hf_dataset, "toy": toy}
    globals().update(names)  # the functions, not the submodules of the same names
    return names


def __getattr__(name: str):
    if name in _NAMES:
        return _load()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@gentool.hookimpl
def gentool_register_data_sources(register):
    for name, factory in _load().items():
        register(name, factory)
