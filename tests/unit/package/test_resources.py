"""The files the commands read at run time: inside the package, found by `mwa_cli.resources`, all in the wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import mwa_cli
from mwa_cli.errors import MwaError
from mwa_cli.resources import MINI_MODEL, SAMPLE_DATA, TEMPLATES, package_file, package_path
from tests.helpers.paths import REPO

PACKAGE = Path(mwa_cli.__file__).parent


def test_every_run_time_folder_is_inside_the_package():
    assert package_file(TEMPLATES, "report.html.j2").is_file()
    assert package_file(TEMPLATES, "captions_ja.txt").is_file()
    assert package_file(SAMPLE_DATA, "captions.csv").is_file()
    assert package_file(MINI_MODEL, "weights.safetensors").is_file()
    assert package_path(TEMPLATES).parent == PACKAGE


def test_a_missing_packaged_file_is_a_clear_error():
    with pytest.raises(MwaError, match="packaged file templates/nope.j2 is missing") as err:
        package_file(TEMPLATES, "nope.j2")
    assert "reinstall" in err.value.hint


def test_the_wheel_globs_cover_every_data_file_of_the_package():
    """A data file added under mwa_cli/ and not matched by pyproject's package-data would be missing from the
    wheel (and so from every `pip install`): list it there."""
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mwa_cli"]
    shipped = {p for g in globs for p in PACKAGE.glob(g) if p.is_file()}
    data = {p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts}
    assert data - shipped == set()
    assert len(shipped) > 440  # the sample photos, the templates and the mini model


def test_the_three_html_pages_share_one_environment():
    from mwa_cli.templating import environment, get_template

    env = environment()
    assert env.autoescape is True and env.trim_blocks and env.lstrip_blocks
    for name in ("report.html.j2", "search.html.j2", "serve.html.j2"):
        assert get_template(name).environment is env
    rendered = env.from_string("{{ x }}").render(x="<script>")
    assert rendered == "&lt;script&gt;"
