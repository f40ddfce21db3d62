"""Shared test fixtures. Reference files come from ../shared beside the checkout (never copied here)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (reference fixtures and beit3.spm); tests that need it skip with the reason when absent."""
    if not (SHARED / "fixtures").is_dir():
        pytest.skip(f"reference fixtures not found at {SHARED} (CI lays ../shared beside the checkout)")
    return SHARED
