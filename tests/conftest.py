"""Fixtures shared across the test suite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the bundled example lives in its jobs/, clusters/ and policies/."""


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A private copy of the bundled example (jobs/, clusters/, policies/) that a test may edit."""
    repo = tmp_path / "repo"
    for folder in ("jobs", "clusters", "policies"):
        shutil.copytree(ROOT / folder, repo / folder)
    return repo
