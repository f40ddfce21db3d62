"""The one type check of configuration values (mwa_cli/typecheck.py), which TrainConfig's file reader and the
methods' options both use."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import pytest

from mwa_cli.typecheck import MAX_WHOLE, TypeMismatch, conform, describe, matches, type_names


def test_a_literal_matches_by_value_and_type():
    hint = Literal["auto", "ffn", 1]
    assert matches("auto", hint) and matches("ffn", hint) and matches(1, hint)
    assert not matches("Auto", hint)
    assert not matches(True, hint)  # True == 1, but it is no member
    assert not matches(1.0, hint)


def test_a_union_with_none_takes_none_and_each_member():
    for hint in (int | None, Optional[int], Union[None, int]):
        assert matches(None, hint) and matches(3, hint)
        assert not matches("3", hint) and not matches(3.5, hint)
    assert not matches(None, int)
    assert matches(8, int | Literal["auto"]) and matches("auto", int | Literal["auto"])
    assert not matches("big", int | Literal["auto"])


def test_bool_is_never_an_int_and_an_int_never_a_bool():
    assert matches(True, bool) and matches(False, bool | None)
    assert not matches(True, int) and not matches(False, int | None)
    assert not matches(1, bool) and not matches(0, bool)


def test_a_float_takes_ints_but_not_bools_nan_or_infinity():
    assert matches(2, float) and matches(0.5, float)
    assert not matches(True, float)
    for bad in (float("nan"), float("inf"), -float("inf"), "0.5"):
        assert not matches(bad, float | None)
    assert conform(2, float) == 2 and type(conform(2, float)) is int  # accepted as given, not converted


def test_a_list_checks_every_item():
    assert matches(["q_proj", "v_proj"], list[str]) and matches([], list[int])
    assert not matches(["q_proj", 3], list[str])
    assert not matches("q_proj", list[str])
    assert not matches((1, 2), list[int])
    assert not matches([1, True], list[int])


def test_nested_hints_check_every_level():
    spec = Union[str, list[int], dict[str, Any]]  # a method's layer selection
    assert matches("top-4", spec) and matches([0, 5], spec) and matches({"vision": [1], "text": "all"}, spec)
    assert not matches([0, "5"], spec) and not matches({1: "all"}, spec) and not matches(3, spec)
    deep = dict[str, list[float | None]]
    assert matches({"a": [1, 0.5, None]}, deep)
    assert not matches({"a": [1, float("nan")]}, deep)
    assert not matches({"a": 1.0}, deep)


def test_any_and_plain_classes():
    assert matches(object(), Any) and matches(None, Any)
    assert matches({"rank": 8}, dict) and not matches([], dict)
    assert matches("x", str) and not matches(b"x", str)


def test_json_numbers_turn_integral_floats_into_ints_within_max_whole():
    assert type(conform(32.0, int | str | None, json_numbers=True)) is int
    assert conform(32.0, int | None, json_numbers=True) == 32
    assert [type(v) for v in conform([1.0, 2], list[int], json_numbers=True)] == [int, int]
    assert conform(MAX_WHOLE, int, json_numbers=True) == MAX_WHOLE
    for bad in (MAX_WHOLE + 1, 1e300, 32.5, float("inf"), True):
        with pytest.raises(TypeMismatch):
            conform(bad, int | None, json_numbers=True)
    with pytest.raises(TypeMismatch):
        conform(32.0, int)  # without json_numbers a float is no int
    assert conform(MAX_WHOLE + 1, int) == MAX_WHOLE + 1
    assert type(conform(32.0, float | None, json_numbers=True)) is float  # a float field keeps its float


def test_conform_returns_the_value_and_raises_on_a_mismatch():
    options = {"rank": 8}
    assert conform(options, dict) is options
    with pytest.raises(TypeMismatch, match="'big' is not a whole number or 'auto'"):
        conform("big", int | Literal["auto"])


def test_describe_says_what_a_method_option_may_be():
    assert describe(int | Literal["auto"]) == "a whole number or 'auto'"
    assert describe(list[str]) == "a list of texts"
    assert describe(bool) == "true or false"
    assert describe(float) == "a finite number"
    assert describe(dict[str, Any]) == "an object"


def test_type_names_name_a_files_types():
    assert type_names(float | None) == {"float", "null"}
    assert type_names(int | str | None) == {"int", "str", "null"}
    assert type_names(Optional[bool]) == {"bool", "null"}
    assert type_names(dict) == {"dict"}


def test_a_whole_number_beyond_the_float_range_is_no_float_and_raises_no_overflow():
    assert not matches(10**400, float) and matches(10**300, float)
    with pytest.raises(TypeMismatch, match="is not"):
        conform(10**400, float, json_numbers=True)
