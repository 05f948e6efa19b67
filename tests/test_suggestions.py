"""Closest-name suggestions ignore case and catch transposed letters."""

from typing import Literal

import pytest

from gentool.options import OptionError, check_options
from gentool.registry import Registry, RegistryError, closest


def test_closest_ignores_case():
    assert closest("DDIM", ["ancestral", "ddim", "dpmpp_2m"])[0] == "ddim"
    assert closest("Cosine", ["linear", "cosine"])[0] == "cosine"
    assert closest("ddpm", ["ancestral", "ddim", "dpmpp_2m"])[0] == "ddim"  # as before


def test_unknown_component_in_capitals_gets_a_suggestion():
    registry = Registry()
    for name in ("ancestral", "ddim", "dpmpp_2m"):
        registry.add("sampler", name, lambda: None, "test")
    with pytest.raises(RegistryError, match=r"unknown sampler 'DDIM'; did you mean 'ddim'"):
        registry.get("sampler", "DDIM")


def masked(*, mask: Literal["left", "right", "centre", "strokes"] = "right"):
    return mask


@pytest.mark.parametrize("value,near", [("center", "centre"), ("Left", "left"), ("STROKES", "strokes")])
def test_a_bad_choice_suggests_the_closest_valid_one(value, near):
    with pytest.raises(OptionError) as info:
        check_options(masked, {"mask": value})
    assert info.value.message == (f"{value!r} is not valid: did you mean {near!r}? "
                                  "expected one of 'left', 'right', 'centre', 'strokes'")


def test_a_choice_with_nothing_close_lists_the_valid_ones():
    with pytest.raises(OptionError) as info:
        check_options(masked, {"mask": "zzz"})
    assert info.value.message == "'zzz' is not valid: expected one of 'left', 'right', 'centre', 'strokes'"


def test_a_name_wrong_only_in_case_suggests_that_name_alone():
    from gentool.registry import closest

    assert closest("Cosine", ["cosine", "linear", "sigmoid"]) == ["cosine"]
    assert closest("cosin", ["cosine", "linear", "sigmoid"]) == ["cosine"]
