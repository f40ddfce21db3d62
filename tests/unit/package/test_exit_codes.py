"""One exit-code table: every EXIT_* code lives in mwa_cli/errors.py, one number per meaning, documented.

The scan reads the source (AST), so a module defining its own exit code is found without importing it.
"""

from __future__ import annotations

import ast
import re

from mwa_cli import errors
from tests.helpers.paths import REPO

PACKAGE = REPO / "mwa_cli"



def exit_codes() -> dict[str, int]:
    return {name: value for name, value in vars(errors).items() if name.startswith("EXIT_") and isinstance(value, int)}


def own_exit_codes(tree: ast.AST) -> list[str]:
    """Names `EXIT_*` a module assigns, other than durations (a float such as a launcher's `EXIT_GRACE_S = 60.0`)."""
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        for t in targets:
            if isinstance(t, ast.Name) and t.id.startswith("EXIT_") and not (
                    isinstance(value, ast.Constant) and isinstance(value.value, float)):
                found.append(t.id)
    return found


def test_every_exit_code_has_its_own_number_except_the_listed_aliases():
    codes = exit_codes()
    assert set(errors.EXIT_ALIASES) <= set(codes) and set(errors.EXIT_ALIASES.values()) <= set(codes)
    for alias, of in errors.EXIT_ALIASES.items():
        assert codes[alias] == codes[of], f"{alias} is listed as an alias of {of} but differs"
    primary = {name: value for name, value in codes.items() if name not in errors.EXIT_ALIASES}
    by_value: dict[int, list[str]] = {}
    for name, value in primary.items():
        by_value.setdefault(value, []).append(name)
    assert {v: n for v, n in by_value.items() if len(n) > 1} == {}


def test_nonfinite_loss_is_not_bad_data():
    assert errors.EXIT_NONFINITE not in (errors.EXIT_DATA, errors.EXIT_USAGE, errors.EXIT_INTERNAL)


def test_every_exit_code_has_a_one_line_meaning_in_errors_py():
    lines = (PACKAGE / "errors.py").read_text(encoding="utf-8").splitlines()
    for name in exit_codes():
        line = next(x for x in lines if x.startswith(f"{name} = "))
        assert re.search(r"#\s*\S", line), f"{name} has no one-line meaning"


def test_docs_exit_code_table_lists_every_code():
    text = (REPO / "docs" / "formats.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", section, re.M)}
    assert rows == set(exit_codes().values())


def test_no_module_but_errors_defines_an_exit_code():
    defining = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel == "mwa_cli/errors.py":
            continue
        names = own_exit_codes(ast.parse(path.read_text(encoding="utf-8")))
        if names:
            defining[rel] = names
    assert not defining, f"import these from mwa_cli.errors instead: {defining}"


def test_the_scan_finds_a_module_level_exit_code():
    tree = ast.parse("EXIT_DATA = 3\nEXIT_X: int = 9\nEXIT_GRACE_S = 60.0\nEXIT_Y = errors.EXIT_DATA\n")
    assert own_exit_codes(tree) == ["EXIT_DATA", "EXIT_X", "EXIT_Y"]
