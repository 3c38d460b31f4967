"""OpenFL's environment (.venv-openfl) is its lock: requirements/openfl.txt pins every package with hashes, keeps
what OpenFL 1.9 was measured to need (numpy below 2.4, grpcio below 1.66, torch's CPU build), and the virtualenv
the README's commands make holds exactly it.

A lock of its own because OpenFL 1.9 pins grpcio<1.66 and Flower 1.41 needs grpcio>=1.70 (tests/test_lock.py
checks the main one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

LOCK = ROOT / "requirements" / "openfl.txt"
VENV = ROOT / ".venv-openfl"


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", line)
        if match:
            assert re.fullmatch(r"\s+--hash=sha256:[0-9a-f]{64}( \\)?", lines[number + 1]), f"{line}: no sha256 hash"
            pins[canonicalize_name(match.group(1))] = match.group(2)
        else:
            assert not re.match(r"^[A-Za-z0-9]", line), f"{LOCK}: expected 'name==version \\' entries, got {line!r}"
    return pins


def test_every_package_is_pinned_exactly_with_hashes_for_cpython_311_on_linux() -> None:
    pins = _pins()
    assert len(pins) > 30
    header = LOCK.read_text(encoding="utf-8").splitlines()[1]
    for option in ("requirements/openfl.in", "--generate-hashes", "--python-version 3.11", "--python-platform x86_64-"):
        assert option in header, header
    assert "-e " not in LOCK.read_text() and "file:" not in LOCK.read_text()  # nothing of this machine's


def test_the_lock_keeps_what_openfl_19_needs_here() -> None:
    pins = _pins()
    assert Version(pins["openfl"]).release[:2] == (1, 9)
    assert Version(pins["numpy"]) < Version("2.4"), "numpy 2.4 breaks `fx aggregator start` (reshape(newshape=))"
    assert Version(pins["grpcio"]) < Version("1.66")
    assert pins["torch"] == "2.13.0+cpu"
    assert not [name for name in pins if name.startswith(("nvidia-", "triton", "cuda-"))]
    assert "flwr" not in pins


@pytest.mark.skipif(os.environ.get("FLEET_UNLOCKED") == "1", reason="the drift workflow installs the newest, unlocked")
def test_the_openfl_virtualenv_holds_exactly_the_lock() -> None:
    python = VENV / "bin" / "python"
    assert python.exists(), f"{VENV} is missing: `make openfl-env` (part of `make test`) creates it from {LOCK}"
    listing = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    installed = {canonicalize_name(entry["name"]): entry["version"] for entry in json.loads(listing.stdout)}
    installed.pop("pip", None)
    pins = _pins()
    assert {n: v for n, v in installed.items() if pins.get(n) != v} == {}, "installed, but not as locked"
    assert {n: v for n, v in pins.items() if installed.get(n) != v} == {}, "locked, but not installed"
