"""Built-in noise schedules: linear, cosine and sigmoid."""

import gentool

from gentool_schedules.cosine import cosine
from gentool_schedules.linear import linear
from gentool_schedules.sigmoid import sigmoid


@gentool.hookimpl
def gentool_register_schedules(register):
    register("linear", linear, default=True)  # a recipe without [schedule]: Ho et al.'s
    register("cosine", cosine)
    register("sigmoid", sigmoid)
