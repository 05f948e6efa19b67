"""Built-in conditioners: the class embedding with a null token."""

import gentool

from gentool_conditioners.class_embedding import class_embedding


@gentool.hookimpl
def gentool_register_conditioners(register):
    register("class_embedding", class_embedding)
