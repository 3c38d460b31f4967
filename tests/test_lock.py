"""The lock (requirements/fleet.txt) is what gets installed: every package pinned exactly, with hashes, admitted by
pyproject.toml's ranges, and the virtualenv the README's commands make holds exactly it (`pip freeze` == lock).

The scheduled drift workflow installs the newest allowed versions instead and sets FLEET_UNLOCKED=1: there, and
only there, the virtualenv is not the lock.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCK = ROOT / "requirements" / "fleet.txt"

NOT_LOCKED = {"fleet", "pip"}
"""fleet itself (installed editable from the work tree) and the pip that `python -m venv` brings."""


def _blocks() -> dict[str, list[str]]:
    """Package name -> the lines of its entry (the pin, its hashes, its `via` comments)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if match:
            current = blocks.setdefault(canonicalize_name(match.group(1)), [])
        current.append(line)
    return blocks


def _locked() -> dict[str, str]:
    pins = {}
    for name, lines in _blocks().items():
        version = re.match(r"^[^=]+==([^ \\]+)", lines[0])
        assert version, lines[0]
        pins[name] = version.group(1)
    return pins


def _required() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    build = [line for line in (ROOT / "requirements" / "build.in").read_text().splitlines() if not line.startswith("#")]
    listed = [*project["dependencies"], *project["optional-dependencies"]["dev"], *filter(None, build)]
    return [Requirement(text) for text in listed]


def test_every_package_is_pinned_exactly_with_hashes() -> None:
    blocks = _blocks()
    assert len(blocks) > 100
    for name, lines in blocks.items():
        assert re.match(r"^\S+==\S+ \\$", lines[0]), lines[0]
        hashes = [line for line in lines if re.fullmatch(r"\s+--hash=sha256:[0-9a-f]{64}( \\)?", line)]
        assert hashes, f"{name}: no sha256 hash in the lock"
    assert "-e " not in LOCK.read_text() and "file:" not in LOCK.read_text()  # nothing of this machine's


def test_the_lock_resolves_for_cpython_311_on_linux_x86_64_with_the_dev_extra() -> None:
    header = LOCK.read_text().splitlines()[1]
    for option in ("--extra dev", "--generate-hashes", "--python-version 3.11", "--python-platform x86_64-"):
        assert option in header, header
    assert "make lock" in (ROOT / "README.md").read_text() and "uv pip compile" in (ROOT / "Makefile").read_text()


def test_torch_is_the_cpu_build_and_no_cuda_package_is_locked() -> None:
    locked = _locked()
    assert locked["torch"].endswith("+cpu")
    assert not [name for name in locked if name.startswith(("nvidia-", "triton", "cuda-"))]


def test_pyproject_ranges_admit_every_locked_version() -> None:
    locked = _locked()
    for requirement in _required():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is required but not locked: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"the lock pins {name}=={locked[name]}, outside pyproject.toml's {requirement}: run `make lock`"
        )


@pytest.mark.skipif(os.environ.get("FLEET_UNLOCKED") == "1", reason="the drift workflow installs the newest, unlocked")
def test_the_virtualenv_holds_exactly_the_lock() -> None:
    installed = {canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()}
    for name in NOT_LOCKED:
        installed.pop(name, None)
    locked = _locked()
    assert {n: v for n, v in installed.items() if locked.get(n) != v} == {}, "installed, but not as locked"
    assert {n: v for n, v in locked.items() if installed.get(n) != v} == {}, "locked, but not installed"
