"""Where the tests find things, wherever the test module sits: the repository, the shared reference fixtures
beside the checkout, the fixtures kept in tests/, and the helper modules subprocesses import."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
FIXTURES = REPO / "tests" / "fixtures"
HELPERS = REPO / "tests" / "helpers"
