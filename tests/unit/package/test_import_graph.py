"""No import cycles among mwa_cli's modules, the layers below the command line never reach up to it (nor to the
terminal), and the command line starts without torch.

Every ``import`` / ``from ... import`` in a module counts, at module level or inside a function (a deferred
import still ties the two modules together); imports under ``if TYPE_CHECKING:`` do not run and do not count.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPO

PACKAGE = REPO / "mwa_cli"

# The packages below the command line: they report through callbacks and return data; mwa_cli/commands/ draws.
LIBRARY_PACKAGES = ("mwa_cli.data", "mwa_cli.models", "mwa_cli.adapters", "mwa_cli.train", "mwa_cli.eval",
                    "mwa_cli.search", "mwa_cli.report", "mwa_cli.export", "mwa_cli.tune")
# Library modules that may import rich or mwa_cli.commands, each with its reason. The test fails on any other,
# and on an entry here that no longer does (remove it then).
TERMINAL_ALLOWED = {
    # its job is the terminal rendering of the report (Rich tables and panels), which `mwa report` prints
    "mwa_cli.report.console": {"rich"},
}


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The mwa_cli modules an import statement loads (``from pkg import sub`` loads the submodule)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return {t for t in targets if t in known and t != module}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = {name for name, _ in files}
    graph = {}
    for (name, is_package), path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        graph[name] = set().union(*(imported(name, is_package, n, known) for n in ast.walk(tree)
                                    if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped))
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative; components of more than one module (a module never imports itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One import path through ``component`` that returns to its start: ``a -> b -> c -> a``."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                frontier.append(child)
    raise AssertionError(f"{component} is not a cycle")


def all_imports(path: Path) -> set[str]:
    """Every module name an import statement in `path` names (mwa_cli's and others', relative ones resolved),
    imports under ``if TYPE_CHECKING:`` left out."""
    module, is_package = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            out.update({base, *(f"{base}.{alias.name}" for alias in node.names)})
    return out


def reaches(names: set[str], target: str) -> bool:
    return any(n == target or n.startswith(target + ".") for n in names)


def terminal_imports() -> dict[str, set[str]]:
    """Library modules that import rich or mwa_cli.commands: {module: {"rich", "mwa_cli.commands"} ∩ what}."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name, _ = module_name(path)
        if not name.startswith(LIBRARY_PACKAGES):
            continue
        names = all_imports(path)
        hits = {t for t in ("rich", "mwa_cli.commands") if reaches(names, t)}
        if hits:
            found[name] = hits
    return found


def test_the_library_never_imports_the_command_line_or_rich():
    found = terminal_imports()
    new = {m: sorted(h) for m, h in found.items() if not h <= TERMINAL_ALLOWED.get(m, set())}
    gone = sorted(m for m, h in TERMINAL_ALLOWED.items() if found.get(m, set()) != h)
    assert not new, f"library modules that import the command line or rich (report through a callback): {new}"
    assert not gone, f"no longer import what TERMINAL_ALLOWED lists, remove them: {gone}"


def test_data_never_imports_train_even_through_another_module():
    graph = import_graph()
    for module in sorted(m for m in graph if m == "mwa_cli.data" or m.startswith("mwa_cli.data.")):
        seen, todo = set(), [module]
        while todo:
            for child in graph[todo.pop()] - seen:
                seen.add(child)
                todo.append(child)
        train = sorted(m for m in seen if reaches({m}, "mwa_cli.train"))
        assert not train, f"{module} imports {train} (directly or through another module)"


def test_the_scan_sees_deferred_relative_and_from_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "mwa_cli" / "data"
    pkg.mkdir(parents=True)
    mod = pkg / "bar.py"
    mod.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    import rich\n"
                   "def f():\n    from ..commands import common\n    from rich.progress import Progress\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    names = all_imports(mod)
    assert reaches(names, "mwa_cli.commands") and reaches(names, "rich") and "rich" not in names


def test_no_import_cycles():
    graph = import_graph()
    cycles = [f"{' -> '.join(a_cycle(graph, c))}  (modules in the cycle: {', '.join(sorted(c))})"
              for c in strongly_connected(graph)]
    assert not cycles, "import cycles among mwa_cli modules:\n" + "\n".join(cycles)


def test_the_checker_finds_a_cycle_and_names_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": set()}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
    assert a_cycle(graph, {"a", "b", "c"}) == ["a", "b", "c", "a"]


def test_the_command_line_and_the_method_registry_load_without_torch():
    """`mwa --help` lists the methods and `mwa train` validates their options before any model exists: neither
    may pay for importing torch (about 3 s on the 2-core machine)."""
    script = ("import json, sys\n"
              "import mwa_cli.cli\n"
              "from mwa_cli.adapters import registry\n"
              "registry.resolve_options('mwa', {'layers': 'top-2'})\n"
              "print(json.dumps({'torch': 'torch' in sys.modules, 'methods': registry.names()}))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"torch": False, "methods": ["mwa", "nke", "lora", "full-ft", "frozen"]}


# Lower layers never import upper ones: (importer package, imported package). eval, models and the shared
# helpers (runs, runtime) serve train, search, export and report, not the other way round; what uses a trained
# run (search, export, serve) opens it through runs.py, never through the trainer.
LAYERS = [("mwa_cli.eval", "mwa_cli.train"), ("mwa_cli.models", "mwa_cli.train"), ("mwa_cli.models", "mwa_cli.eval"),
          ("mwa_cli.runs", "mwa_cli.train"), ("mwa_cli.runs", "mwa_cli.eval"), ("mwa_cli.runtime", "mwa_cli.train"),
          ("mwa_cli.adapters", "mwa_cli.train"), ("mwa_cli.search", "mwa_cli.train"),
          ("mwa_cli.export", "mwa_cli.train"), ("mwa_cli.serve", "mwa_cli.train")]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    def within(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    return [f"{a} imports {b}" for low, high in LAYERS for a in sorted(graph) if within(a, low)
            for b in sorted(graph[a]) if within(b, high)]


def test_lower_layers_do_not_import_upper_ones():
    assert layer_violations(import_graph()) == []
    assert layer_violations({"mwa_cli.eval.embed": {"mwa_cli.train.data"}}) == ["mwa_cli.eval.embed imports "
                                                                                 "mwa_cli.train.data"]
