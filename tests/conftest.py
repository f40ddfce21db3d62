"""Shared test fixtures. Reference files come from ../shared beside the checkout (never copied here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# pytest-xdist's workers inherit COLUMNS=80, and a Rich console created at import keeps it: the tests that set
# their own width (CliRunner env, terminal_width) would then see 80. Without it, each reads its own.
os.environ.pop("COLUMNS", None)

from tests.helpers.data_dir import make_train_data_dir
from tests.helpers.paths import SHARED
from tests.helpers.tokenizer import make_train_tokenizer


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (reference fixtures and beit3.spm); tests that need it skip with the reason when absent."""
    if not (SHARED / "fixtures").is_dir():
        pytest.skip(f"reference fixtures not found at {SHARED} (CI lays ../shared beside the checkout)")
    return SHARED


@pytest.fixture(scope="session", autouse=True)
def own_settings_folder(tmp_path_factory):
    """`mwa settings`: every test (and every subprocess it starts) reads an empty settings folder of the test
    session, never the user's own defaults; a test that sets some points MWA_CONFIG_HOME at its own folder."""
    before = os.environ.get("MWA_CONFIG_HOME")
    os.environ["MWA_CONFIG_HOME"] = str(tmp_path_factory.mktemp("mwa_config"))
    yield
    if before is None:
        os.environ.pop("MWA_CONFIG_HOME", None)
    else:
        os.environ["MWA_CONFIG_HOME"] = before


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread, like the subprocesses (OMP_NUM_THREADS=1): fast on a busy 2-core box, and the same
    reduction order in every process, which bit-exact comparisons rely on. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- train_ fixtures (trainer tests)
@pytest.fixture(scope="session")
def train_data_dir(tmp_path_factory) -> Path:
    return make_train_data_dir(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="session")
def train_tokenizer(tmp_path_factory) -> Path:
    return make_train_tokenizer(tmp_path_factory.mktemp("train_tok") / "tiny.model")
