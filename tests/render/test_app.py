"""Synthesis: one object per file and one file per object, or an error naming both files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import render
from fleet.repository import load_repository
from render.charts.base import FleetApp, FolderChart
from render.constructs.namespace import Namespace
from render.constructs.service_account import ServiceAccount

ROOT = Path(__file__).resolve().parents[2]


def test_one_object_in_two_folders_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def twice(app: FleetApp, _repository: object) -> None:
        for folder in ("controller", "namespaces/fleet-system"):
            Namespace(FolderChart(app, folder), name="fleet-system", component="test", source="test")

    monkeypatch.setitem(render.TARGETS, "twice", twice)
    with pytest.raises(ValueError, match=r"one object is rendered twice: .*controller/namespace-fleet-system\.yaml"):
        render.synth(load_repository(ROOT), "twice")


def test_two_objects_in_one_file_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def clash(app: FleetApp, _repository: object) -> None:
        chart = FolderChart(app, "a")
        for namespace in ("one", "two"):  # the file name leaves the namespace out
            ServiceAccount(chart, name="x", namespace=namespace, component="test", source="test")

    monkeypatch.setitem(render.TARGETS, "clash", clash)
    with pytest.raises(ValueError, match=r"two rendered objects share the output file a/serviceaccount-x\.yaml"):
        render.synth(load_repository(ROOT), "clash")


def _fleet(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``fleet`` as its own process, printing at exit which of the heavy top-level packages it imported."""
    script = (
        "import atexit, sys\n"
        "heavy = ('torch', 'flwr', 'kopf', 'kubernetes', 'boto3', 'botocore', 'numpy', 'sklearn', 'matplotlib',\n"
        "         'aiohttp')\n"
        "atexit.register(lambda: print('imported:', sorted(m for m in heavy if m in sys.modules)))\n"
        "from fleet.cli import main\n"
        f"main({list(arguments)!r})\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)


def test_fleet_render_imports_no_training_or_cluster_client_stack(example_repo: Path) -> None:
    """The renderer's whole process pays for cdk8s and the models, never for torch, Flower, kopf or the clients."""
    result = _fleet("render", "--repo", str(example_repo), "--crds", str(example_repo / "no-crds"))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    assert result.stdout.splitlines()[-1] == "imported: []", result.stdout


def test_a_bad_repository_exits_2_with_only_its_problems_while_node_starts(example_repo: Path) -> None:
    """The renderer starts on a thread while the repository loads: a repository that fails to load still exits
    2 with its problems and nothing else (no trace of the thread), and writes nothing."""
    job = example_repo / "jobs" / "mnist-digits.yaml"
    job.write_text(job.read_text().replace("rounds:", "roundz:", 1))
    result = _fleet("render", "--repo", str(example_repo))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("2 problem(s) in ") and lines[0].endswith("nothing was written"), result.stderr
    assert [line.split(": ")[1] for line in lines[1:]] == ["rounds", "roundz"], result.stderr
    assert not (example_repo / "manifests").exists()
