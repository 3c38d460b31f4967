"""fleet plan on the command line: the table, JSON with every cluster, --diff against a git base."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml
from click.testing import CliRunner

from fleet.cli import main


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=60,
    )


def _commit_base(repo: Path) -> None:
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "base")


def _edit(path: Path, **changes: object) -> None:
    document = yaml.safe_load(path.read_text())
    document.update(changes)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_json_lists_every_cluster(example_repo: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "--repo", str(example_repo), "--output", "json"])
    assert result.exit_code == 0, result.output
    job, openfl = json.loads(result.output)["jobs"]
    assert job["job"] == "mnist-digits" and job["minAvailableClientsMet"] is True
    assert openfl["job"] == "mnist-digits-openfl" and openfl["selected"] == job["selected"]
    clusters = {c["cluster"]: c for c in job["clusters"]}
    assert set(clusters) == {p.stem for p in (example_repo / "clusters").glob("*.yaml")}
    assert sorted(job["selected"]) == ["eu-central-lab", "eu-west-hospital", "eu-west-university"]
    assert clusters["us-east-clinic"]["reasons"][0]["policy"] == "digits-residency"
    assert any(r["category"] == "dataset" for r in clusters["us-west-edge"]["reasons"])


def test_table_names_reasons(example_repo: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "mnist-digits", "--repo", str(example_repo)])
    assert result.exit_code == 0, result.output
    assert "digits-residency" in result.output and "us-west-edge" in result.output
    assert "minAvailableClients 2 met" in " ".join(result.output.split())


def test_unknown_job_exits_2(example_repo: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "nope", "--repo", str(example_repo)])
    assert result.exit_code == 2
    assert "no job named 'nope'" in result.output


def test_diff_no_change_exits_0(example_repo: Path) -> None:
    _commit_base(example_repo)
    result = CliRunner().invoke(main, ["plan", "--diff", "--repo", str(example_repo), "--output", "json"])
    assert result.exit_code == 0, result.output
    statuses = {j["job"]: j["status"] for j in json.loads(result.output)["jobs"]}
    assert statuses == {"mnist-digits": "unchanged", "mnist-digits-openfl": "unchanged"}


def test_diff_shows_gains_and_losses(example_repo: Path) -> None:
    _commit_base(example_repo)
    # The Flower job now takes two clusters (the smallest, eu-west-university, is cut); a new EU cluster joins
    # and eu-central-lab goes, for both jobs.
    _edit(example_repo / "jobs" / "mnist-digits.yaml", maxClients=2)
    (example_repo / "clusters" / "eu-central-lab.yaml").unlink()
    hospital = yaml.safe_load((example_repo / "clusters" / "eu-west-hospital.yaml").read_text())
    hospital.update(name="eu-north-institute", labels={"region": "eu-central", "tier": "research"})
    (example_repo / "clusters" / "eu-north-institute.yaml").write_text(yaml.safe_dump(hospital))
    result = CliRunner().invoke(main, ["plan", "--diff", "--repo", str(example_repo), "--output", "json"])
    assert result.exit_code == 1, result.output
    job, openfl = json.loads(result.output)["jobs"]
    assert job["job"] == "mnist-digits" and job["status"] == "changed"
    assert job["gained"] == ["eu-north-institute"]
    assert job["lost"] == ["eu-central-lab", "eu-west-university"]
    assert openfl["job"] == "mnist-digits-openfl" and openfl["status"] == "changed"
    assert (openfl["gained"], openfl["lost"]) == (["eu-north-institute"], ["eu-central-lab"])

    markdown = CliRunner().invoke(main, ["plan", "--diff", "--repo", str(example_repo), "--output", "markdown"])
    assert markdown.exit_code == 1
    assert "| mnist-digits | changed | eu-north-institute | eu-central-lab, eu-west-university |" in markdown.output


def test_diff_added_and_removed_jobs(example_repo: Path) -> None:
    _commit_base(example_repo)
    job = example_repo / "jobs" / "mnist-digits.yaml"
    copy = example_repo / "jobs" / "digits-two.yaml"
    copy.write_text(job.read_text())
    _edit(copy, name="digits-two", namespace="fl-digits-two")
    job.unlink()
    result = CliRunner().invoke(main, ["plan", "--diff", "--repo", str(example_repo), "--output", "json"])
    assert result.exit_code == 1, result.output
    statuses = {j["job"]: j["status"] for j in json.loads(result.output)["jobs"]}
    assert statuses == {"digits-two": "added", "mnist-digits": "removed", "mnist-digits-openfl": "unchanged"}


def test_diff_bad_base_exits_2(example_repo: Path) -> None:
    _commit_base(example_repo)
    result = CliRunner().invoke(main, ["plan", "--diff", "--base", "no-such-ref", "--repo", str(example_repo)])
    assert result.exit_code == 2
    assert "no-such-ref" in result.output
