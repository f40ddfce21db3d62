"""The report's types (report/model.py) are what build_report makes: every key of every TypedDict present, no
other key, each value of its declared type, keys in the declared order (the order --json prints) — for a
comparison, an estimated baseline, no baseline, several seeds, and runs that learned nothing (ROI withheld)."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest

from mwa_cli.report.api import make_report
from mwa_cli.report.model import Cost, Report, RunEntry
from tests.helpers.report_builder import standard_runs
from tests.unit.report.test_build import fake_measure
from tests.unit.report.test_learning import _label_level, _runs, _seeded


def mismatches(value: Any, tp: Any, where: str = "report") -> list[str]:
    """Where `value` is not of type `tp` (TypedDicts, X | None, Literal, list[...], dict[..., ...], Any)."""
    if tp is Any:
        return []
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        arms = [a for a in args if a is not types.NoneType]
        if value is None:
            return [] if len(arms) < len(args) else [f"{where}: None, not {tp}"]
        if len(arms) == 1:  # X | None: say what in the X does not match
            return mismatches(value, arms[0], where)
        fits = [a for a in arms if not mismatches(value, a, where)]
        return [] if fits else [f"{where}: {value!r:.60} is none of {tp}"]
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} not in {args}"]
    if typing.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not {tp.__name__}"]
        hints = get_type_hints(tp)
        if list(value) != list(hints):
            return [f"{where}: keys {list(value)} != {tp.__name__}'s {list(hints)}"]
        return [m for k, sub in hints.items() for m in mismatches(value[k], sub, f"{where}.{k}")]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        return [m for i, v in enumerate(value) for m in mismatches(v, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not a dict"]
        return [m for k, v in value.items() for m in mismatches(k, args[0], f"{where} key") +
                mismatches(v, args[1], f"{where}[{k!r}]")]
    if tp is float:  # an int is a float here (PEP 484), a bool is not
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    return [] if ok else [f"{where}: {value!r:.60} is a {type(value).__name__}, not {tp.__name__}"]


def assert_is_report(rep: Any) -> None:
    problems = mismatches(rep, Report)
    assert not problems, "\n".join(problems)


def test_a_comparison_is_a_report(tmp_path):
    _, runs = standard_runs(tmp_path)
    rep = make_report([], runs, out=tmp_path / "report.html")
    assert rep["decision"]["kind"] == "compare" and rep["runs"][1]["roi"] is not None and rep["html"]
    assert_is_report(rep)


def test_an_estimated_baseline_and_no_baseline_are_reports(tmp_path):
    _, runs = standard_runs(tmp_path / "est", with_full_ft=False)
    rep = make_report([], runs, estimate=True, measure=fake_measure([]), estimate_steps=5, write=False)
    assert rep["baseline"]["estimated"] and rep["runs"][0]["gallery"] is None
    assert_is_report(rep)
    _, runs = standard_runs(tmp_path / "none", with_full_ft=False)
    rep = make_report([], runs, write=False)
    assert rep["baseline"]["run"] is None and rep["runs"][0]["recall_delta"] is None
    assert_is_report(rep)


def test_several_seeds_are_a_report(tmp_path):
    rep = make_report([], _seeded(tmp_path, {"full-ft": [15, 22, 12], "mwa": [24, 14, 23]}), write=False)
    assert rep["seed_groups"] and rep["decision"]["seeds"] is not None
    assert_is_report(rep)


def test_runs_that_learned_nothing_are_a_report_without_roi(tmp_path):
    _, runs = _runs(tmp_path, **{"full-ft": 90.0, "mwa": 85.0})
    _label_level(runs["full-ft"], {"global": 95.0, "local": 90.0, "nominal": 92.0})
    _label_level(runs["mwa"], {"global": 0.0, "local": 100.0, "nominal": 0.0})
    rep = make_report([], tmp_path / "runs", write=False)
    assert rep["decision"]["roi_withheld"] and all(r["roi"] is None for r in rep["runs"])
    assert rep["primary_protocol"] == "label_level" and rep["runs"][0]["per_label"]
    assert_is_report(rep)


@pytest.mark.parametrize("change, problem", [
    (lambda r: r.pop("verdict"), "keys"),  # a key missing
    (lambda r: r.update(extra=1), "keys"),  # a key the type does not name
    (lambda r: r["runs"][0]["cost"].update(hours_unit="hours"), "runs[0].cost.hours_unit"),  # not a Literal's
    (lambda r: r["runs"][0].update(is_main="no"), "runs[0].is_main"),
    (lambda r: r["runs"][1]["recall"].update(rsum=True), "runs[1].recall.rsum"),  # a bool is not a number
])
def test_the_check_finds_what_does_not_match(tmp_path, change, problem):
    _, runs = standard_runs(tmp_path)
    rep = make_report([], runs, write=False)
    assert not mismatches(rep, Report)
    change(rep)
    found = mismatches(rep, Report)
    assert found and problem in found[0]


def test_the_types_name_the_run_level_keys_in_order():
    assert list(get_type_hints(RunEntry))[:6] == ["name", "path", "method", "backbone", "is_baseline", "is_main"]
    assert "hours_unit" in get_type_hints(Cost) and list(get_type_hints(Report))[-1] == "html"
