"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["reference_dir"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The shared reference data directory (outputs of the real darknet and friends).

    Looked up at ``../shared/reference`` next to the repository, or at ``$OWLET_REFERENCE``. Missing
    data fails the test instead of skipping it: a silently skipped oracle proves nothing.
    """
    path = Path(os.environ.get("OWLET_REFERENCE", REPO_ROOT.parent / "shared" / "reference"))
    if not path.is_dir():
        pytest.fail(f"reference data not found at {path} (set OWLET_REFERENCE to its location)")
    return path
