"""An Optional option's None default passes the check again once resolved (a sampler built from resolved options)."""

from __future__ import annotations

import pytest

from gentool.options import OptionError, check_options


def factory(*, lambda_min: float | None = None, steps: int = 1):
    return lambda_min, steps


def test_none_is_valid_only_where_the_annotation_allows_it():
    assert check_options(factory, {"lambda_min": None}) == {"lambda_min": None, "steps": 1}
    assert check_options(factory, check_options(factory, {})) == {"lambda_min": None, "steps": 1}
    with pytest.raises(OptionError, match="expected int"):
        check_options(factory, {"steps": None})
