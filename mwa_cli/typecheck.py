"""Whether a configuration value has its declared type, read from a dataclass's type hints.

One check for `mwa train`'s options (`mwa_cli.train.config.TrainConfig`, values from a --config file or a run's
config.json) and for the methods' options (each method's config dataclass, `mwa_cli.adapters.methods.base`).
Hints are walked with ``typing.get_origin`` / ``get_args``: Literal, unions (``X | None``), ``list[X]``,
``dict[K, V]``, bool, int, float, str and other classes. Ranges are `mwa_cli.ranges`' job, not this one's.
"""

from __future__ import annotations

import math
import sys
import types
import typing
from typing import Any, Literal

# Larger "whole numbers" (1e308) are not counts anyone means, and floats stop holding every integer past it.
MAX_WHOLE = 2**53
_NO_MATCH = object()


class TypeMismatch(ValueError):
    """A value that is none of the types its hint allows."""


def matches(value: Any, hint: Any) -> bool:
    """Whether `value` is of type `hint`, strictly: a Literal member by value and type (True is not 1), bool never
    an int, a float also an int but never NaN or infinity, every item of a list or dict checked."""
    return _conform(value, hint, json_numbers=False) is not _NO_MATCH


def conform(value: Any, hint: Any, *, json_numbers: bool = False) -> Any:
    """`value` as a value of type `hint` (as `matches` decides), else raise `TypeMismatch`.

    `json_numbers`: whole numbers as a JSON or TOML file may write them: an integral float is an int (returned
    converted), and an int beyond `MAX_WHOLE` is none."""
    out = _conform(value, hint, json_numbers=json_numbers)
    if out is _NO_MATCH:
        raise TypeMismatch(f"{value!r} is not {describe(hint)}")
    return out


def _conform(value: Any, hint: Any, *, json_numbers: bool) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        return value if any(value == a and type(value) is type(a) for a in args) else _NO_MATCH
    if origin in (typing.Union, types.UnionType):
        for arg in args:  # the first member that takes the value (and its conversion)
            out = _conform(value, arg, json_numbers=json_numbers)
            if out is not _NO_MATCH:
                return out
        return _NO_MATCH
    if origin is list:
        return _conform_list(value, args[0], json_numbers)
    if origin is dict:
        return _conform_dict(value, args[0], args[1], json_numbers)
    if hint is bool:
        return value if isinstance(value, bool) else _NO_MATCH
    if hint is int:
        return _conform_int(value, json_numbers)
    if hint is float:  # NaN and infinity are no option value
        return value if _finite_number(value) else _NO_MATCH
    if hint is type(None):
        return value if value is None else _NO_MATCH
    return value if isinstance(value, hint) else _NO_MATCH


def _finite_number(value: Any) -> bool:
    """An int or float that a float holds: not NaN, not infinite, and no int beyond the float range (1e400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= sys.float_info.max if isinstance(value, int) else math.isfinite(value)


def _conform_int(value: Any, json_numbers: bool) -> Any:
    if isinstance(value, bool):
        return _NO_MATCH
    if json_numbers and isinstance(value, float) and value.is_integer() and abs(value) <= MAX_WHOLE:
        return int(value)
    if isinstance(value, int) and (not json_numbers or abs(value) <= MAX_WHOLE):
        return value
    return _NO_MATCH


def _conform_list(value: Any, item: Any, json_numbers: bool) -> Any:
    if not isinstance(value, list):
        return _NO_MATCH
    out = [_conform(v, item, json_numbers=json_numbers) for v in value]
    return _NO_MATCH if any(v is _NO_MATCH for v in out) else out


def _conform_dict(value: Any, key: Any, item: Any, json_numbers: bool) -> Any:
    if not isinstance(value, dict):
        return _NO_MATCH
    out = {_conform(k, key, json_numbers=json_numbers): _conform(v, item, json_numbers=json_numbers)
           for k, v in value.items()}
    return _NO_MATCH if any(k is _NO_MATCH or v is _NO_MATCH for k, v in out.items()) else out


def describe(hint: Any) -> str:
    """What `hint` allows, in words for a message: "a whole number or 'auto'", "a list of texts"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is list:
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "an object"
    return {bool: "true or false", int: "a whole number", float: "a finite number", str: "a text"}.get(hint, str(hint))


def type_names(hint: Any) -> set[str]:
    """The names of the types `hint` allows, as a file's reader knows them: {"float", "null"} for `float | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*(type_names(a) for a in typing.get_args(hint)))
    if hint is type(None):
        return {"null"}
    return {getattr(hint, "__name__", str(hint))}
