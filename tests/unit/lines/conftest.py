"""Shared fixtures of the line-store tests: generated photos, a held-out data dir over them, and finished runs
of known quality (tests/helpers/line_store.py). Built once per session; tests publish them into their own stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.line_store import Sample, make_sample


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> Sample:
    return make_sample(tmp_path_factory.mktemp("lines_sample"))


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "lines"
