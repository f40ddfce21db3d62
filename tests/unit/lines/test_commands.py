"""`mwa line ...` on the command line: the flow of add, publish, list, show, rollback and report with --json and
the terminal output (80 columns), refusals as clear messages with their exit codes; and the layering rules of
mwa_cli.lines (no training code, no terminal)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mwa_cli.cli import app
from tests.unit.package.test_import_graph import PACKAGE, all_imports, import_graph, reaches

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def _run(*args: str, code: int = 0):
    res = runner.invoke(app, ["line", *args], terminal_width=80)
    assert res.exit_code == code, res.output
    return res


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_line_commands_end_to_end(store, sample, tmp_path):
    s = ["--store", str(store)]
    assert "held-out set: test of" in _flat(_run("add", "line-3", "--data", str(sample.data), *s).output)
    out = _run("publish", "line-3", str(sample.good1), "--device", "cpu", *s).output
    assert "v1 published and current" in out and "next: mwa index --line line-3" in _flat(out)
    res = json.loads(_run("publish", "line-3", str(sample.good2), "--device", "cpu", "--json", *s).stdout)
    assert res["version"] == 2 and res["check"]["against"] == 1
    res = _run("publish", "line-3", str(sample.bad), "--device", "cpu", *s, code=2)
    assert "not published" in _flat(res.output) and "--force-worse" in _flat(res.output)
    res = _run("publish", "line-3", str(sample.bad), "--device", "cpu", "--force-worse", *s, code=2)
    assert "needs --why" in _flat(res.output)
    out = _run("publish", "line-3", str(sample.bad), "--device", "cpu", "--force-worse", "--why", "new dents",
               *s).output
    assert "published worse on purpose" in _flat(out)
    assert "is a full fine-tuning run" in _flat(_run("publish", "line-3", str(sample.full_ft), *s, code=2).output)
    listing = json.loads(_run("list", "--json", *s).stdout)
    assert listing["lines"][0]["current"] == 3 and listing["lines"][0]["versions"] == 3
    table = _run("list", *s).output
    assert "line-3" in table and max(len(ln) for ln in table.splitlines()) <= 80
    shown = json.loads(_run("show", "line-3", "--verify", "--json", *s).stdout)
    assert [v["version"] for v in shown["versions"]] == [1, 2, 3]
    assert [v["integrity"] for v in shown["versions"]] == ["ok"] * 3 and shown["versions"][2]["forced"]["why"] == \
        "new dents"
    out = _run("show", "line-3", *s).output
    assert "(forced)" in out and "v3" in out and max(len(ln) for ln in out.splitlines()) <= 80
    assert "v2 is current again" in _run("rollback", "line-3", *s).output
    assert json.loads(_run("rollback", "line-3", "v3", "--json", *s).stdout)["version"] == 3
    assert "not a version" in _flat(_run("rollback", "line-3", "vX", *s, code=2).output)
    page = tmp_path / "line3.html"
    assert "3 version(s)" in _run("report", "line-3", "--html", str(page), *s).output
    html = page.read_text(encoding="utf-8")
    assert html.count("<tr class=") == 3 and "published although worse" in html and "new dents" in html
    assert "<svg" in html and "<script" not in html and "default-src 'none'" in html
    ja = tmp_path / "line3_ja.html"
    _run("report", "line-3", "--html", str(ja), "--lang", "ja", *s)
    assert "バージョンごとの再現率" in ja.read_text(encoding="utf-8")
    assert "--lang" in _flat(_run("report", "line-3", "--html", str(ja), "--lang", "fr", *s, code=2).output)
    assert "no line named 'nope'" in _flat(_run("show", "nope", *s, code=2).output)
    assert "no line store" in _flat(_run("list", "--store", str(tmp_path / "none"), code=3).output)


def test_the_report_escapes_what_people_typed(store, sample, tmp_path):
    from mwa_cli.lines.publish import publish
    from mwa_cli.lines.report import render_line_report
    from mwa_cli.lines.store import LineStore
    from mwa_cli.lines.view import describe_line

    LineStore.create(store).add("line-3", data_dir=sample.data)
    publish(store, "line-3", sample.good1, device="cpu")
    publish(store, "line-3", sample.bad, device="cpu", force_worse=True, why='<script>alert("x")</script>')
    html = render_line_report(describe_line(store, "line-3"))
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html


def test_lines_use_no_training_code_and_no_terminal():
    """The layering rule of docs (tests/unit/package: LAYERS) for mwa_cli.lines: what uses a trained run opens it
    through runs.py, never through the trainer; the terminal is the command line's."""
    graph = import_graph()
    modules = [m for m in graph if reaches({m}, "mwa_cli.lines")]
    wrong = {m: sorted(c for c in graph[m] if reaches({c}, "mwa_cli.train") or reaches({c}, "mwa_cli.commands"))
             for m in modules}
    assert len(modules) > 5 and not any(wrong.values()), wrong
    terminal = [p.name for p in (PACKAGE / "lines").glob("*.py") if reaches(all_imports(p), "rich")]
    assert terminal == []


def test_every_line_command_shows_examples_in_its_help():
    for name in ("add", "publish", "list", "show", "rollback", "report"):
        res = runner.invoke(app, ["line", name, "--help"], env={"COLUMNS": "120"})
        assert res.exit_code == 0 and "Examples" in res.output, name
    assert "Typical flow" in runner.invoke(app, ["line", "--help"]).output
