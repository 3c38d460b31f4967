"""Fixtures for the chart tests: the bundled example and any repository, rendered for the hub."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from chart_helpers import Rendered, synth_hub

from fleet.repository import Repository, load_repository


@pytest.fixture
def render_repo() -> Callable[[Path], tuple[Repository, Rendered]]:
    """Load the repository at a path and render it for the hub."""

    def _render(root: Path) -> tuple[Repository, Rendered]:
        repository = load_repository(root)
        return repository, synth_hub(repository)

    return _render


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Repository, Rendered]:
    """The bundled example (a private copy), loaded and rendered once per test module."""
    root = tmp_path_factory.mktemp("example")
    source = Path(__file__).resolve().parents[3]
    for folder in ("jobs", "clusters", "policies"):
        shutil.copytree(source / folder, root / folder)
    repository = load_repository(root)
    return repository, synth_hub(repository)
