"""Where the tests find things, wherever the test module sits: the repository, the shared reference fixtures
beside the checkout, the fixtures kept in tests/, and the helper modules subprocesses import."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
FIXTURES = REPO / "tests" / "fixtures"
HELPERS = REPO / "tests" / "helpers"


def load_script(path: Path) -> ModuleType:
    """A script outside the package (bench/, scripts/) imported as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
