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


@pytest.fixture
def crds_dir() -> Path:
    """The folder of upstream CRDs (``$FLEET_CRDS_DIR`` or ``../shared/crds``); skips the test if absent."""
    from fleet.validation import CRDS_DIR_VARIABLE, default_crds_dir

    folder = default_crds_dir(ROOT)
    if not folder.is_dir():
        pytest.skip(f"no upstream CRDs at {folder}: put them there or point ${CRDS_DIR_VARIABLE} at them")
    return folder


@pytest.fixture(scope="session")
def mnist_cache() -> Path:
    """The verified MNIST cache that the set-up of `make test` writes (`make mnist`). A test that needs it fails,
    saying how to make it, where it is missing or altered: CI always runs the set-up, so a skip would hide a
    broken one."""
    from fleet import mnist

    cache = ROOT / mnist.DEFAULT_CACHE
    wrong = mnist.problems(cache)
    if wrong:
        pytest.fail(
            f"the MNIST cache is missing or altered ({'; '.join(wrong)}): run `make mnist` (part of `make test`) "
            f"or `{mnist.RESTORE_COMMAND} --cache-dir {cache}` first",
            pytrace=False,
        )
    return cache
