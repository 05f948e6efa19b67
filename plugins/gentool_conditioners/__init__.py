"""Built-in conditioners: the class embedding with a null token.

The component module (and torch) is imported when the hook runs or a name is
first used, so loading the plugins for ``gentool --help`` stays cheap.
"""

import gentool


def _load() -> dict:
    from gentool_conditioners.class_embedding import class_embedding

    names = {"class_embedding": class_embedding}
    globals().update(names)
    return names


def __getattr__(name: str):
    if name == "class_embedding":
        return _load()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@gentool.hookimpl
def gentool_register_conditioners(register):
    register("class_embedding", _load()["class_embedding"])
