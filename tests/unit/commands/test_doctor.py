"""`mwa doctor`: every check has a status, and missing pieces come with advice."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from mwa_cli.cli import app
from mwa_cli.doctor import run_checks


def test_checks_have_status_and_advice_when_not_ok(tmp_path):
    checks = run_checks(tmp_path, network=False)
    names = {c.name for c in checks}
    assert {"python", "torch", "disk", "beit3-mini"} <= names
    for c in checks:
        assert c.status in ("ok", "warn", "fail")
        if c.status != "ok":
            assert c.advice, f"{c.name} is {c.status} but says nothing about what to do"


def test_cli_json_output(tmp_path):
    result = CliRunner().invoke(app, ["doctor", "--no-network", "--json", "--runs", str(tmp_path)])
    rows = json.loads(result.stdout)
    assert rows[0]["name"] == "mwa"
    assert result.exit_code == (1 if any(r["status"] == "fail" for r in rows) else 0)


def test_doctor_says_where_to_get_beit3_weights_and_tokenizer(tmp_path, monkeypatch):
    from mwa_cli import doctor
    from mwa_cli.models.sources import TOKENIZER_URL, WEIGHTS_URLS

    monkeypatch.setattr(doctor, "DEFAULT_CACHE", tmp_path)  # nothing downloaded yet
    hints = " ".join(c.advice for c in doctor._weights())
    assert WEIGHTS_URLS["beit3-base"] in hints and TOKENIZER_URL in hints
