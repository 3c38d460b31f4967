"""The upstream target: a job whose privacy options the upstream controller cannot run is left out of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import render
from fleet.repository import load_repository

ROOT = Path(__file__).resolve().parents[3]
JOB = "mnist-digits"


def _repository(tmp_path: Path, privacy: str) -> Path:
    for folder in ("jobs", "clusters", "policies"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    job = tmp_path / "jobs" / "mnist-digits.yaml"
    job.write_text(job.read_text() + privacy)
    return tmp_path


def _jobs(target: str, root: Path) -> list[dict[str, object]]:
    """The example job's FederatedLearning objects in ``target``."""
    rendered = render.synth(load_repository(root), target)
    return [m.body for m in rendered if m.body["kind"] == "FederatedLearning" and m.body["metadata"]["name"] == JOB]


def test_a_private_job_is_rendered_for_the_hub_and_not_for_the_upstream_controller(tmp_path: Path) -> None:
    plain = _repository(tmp_path / "plain", "")
    assert len(_jobs("upstream", plain)) == 1
    for name, privacy in {
        "dp": "privacy: {differentialPrivacy: {noiseMultiplier: 1.0, clippingNorm: 1.0}}\n",
        "secure": "privacy: {secureAggregation: {shares: 3, reconstructionThreshold: 2}}\n",
    }.items():
        root = _repository(tmp_path / name, privacy)
        assert _jobs("upstream", root) == []  # its controller would train without them
        hub = _jobs("hub", root)
        assert len(hub) == 1 and hub[0]["spec"]["privacy"]  # type: ignore[index]


def test_fleet_render_says_which_job_the_upstream_target_leaves_out(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fleet.cli import main

    root = _repository(tmp_path / "repo", "privacy: {secureAggregation: {shares: 3, reconstructionThreshold: 2}}\n")
    result = CliRunner().invoke(main, ["render", "--repo", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "jobs/mnist-digits.yaml: privacy: the upstream target leaves job 'mnist-digits' out" in result.stderr
    plain = _repository(tmp_path / "plain", "")
    result = CliRunner().invoke(main, ["render", "--repo", str(plain), "--out", str(tmp_path / "out-plain")])
    assert result.exit_code == 0 and "upstream target leaves" not in result.stderr
