"""Fixtures of the federation tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from federation_support import flower_processes


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Fail the test when a process of its federation (anything naming its tmp_path) is alive afterwards."""
    yield
    time.sleep(0.2)
    left = flower_processes(str(tmp_path))
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not left, f"processes left behind: {[' '.join(p.cmdline()) for p in left]}"
