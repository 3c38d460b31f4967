"""fleet render --diff on the command line: exit 0 no change, 1 changes, 2 errors; text and markdown."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
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


@pytest.fixture
def git_example(example_repo: Path) -> Path:
    _git(example_repo, "init", "--quiet", "--initial-branch=main")
    _git(example_repo, "add", ".")
    _git(example_repo, "commit", "--quiet", "-m", "base")
    return example_repo


def _run(repo: Path, crds: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["render", "--repo", str(repo), "--crds", str(crds), *args])
    return result.exit_code, result.output


def test_no_change_exits_0(git_example: Path, crds_dir: Path) -> None:
    code, output = _run(git_example, crds_dir, "--diff")
    assert code == 0, output
    assert "no changes" in output
    assert not (git_example / "manifests").exists()  # --diff writes nothing


def test_changed_min_clients_exits_1_and_shows_exactly_it(git_example: Path, crds_dir: Path) -> None:
    job = git_example / "jobs" / "mnist-digits.yaml"
    document = yaml.safe_load(job.read_text())
    document["minAvailableClients"] = 3
    job.write_text(yaml.safe_dump(document, sort_keys=False))

    code, output = _run(git_example, crds_dir, "--diff")
    assert code == 1, output
    changed = [line for line in output.splitlines() if line.startswith(("-", "+")) and line[1:2] not in "-+"]
    assert changed == ["-    minAvailableClients: 2", "+    minAvailableClients: 3"] * 2

    code, markdown = _run(git_example, crds_dir, "--diff", "--output", "markdown", "--base", "HEAD")
    assert code == 1, markdown
    assert markdown.count("<details>") == 1
    assert "<code>jobs/mnist-digits.yaml</code>: 2 modified (+2 −2)" in markdown


def test_errors_exit_2(git_example: Path, crds_dir: Path) -> None:
    code, output = _run(git_example, crds_dir, "--diff", "--base", "no-such-ref")
    assert code == 2 and "no-such-ref" in output
    code, output = _run(git_example, crds_dir, "--base", "HEAD")
    assert code == 2 and "--base goes with --diff" in output
    code, output = _run(git_example, crds_dir, "--output", "markdown")
    assert code == 2 and "--output goes with --diff" in output
    code, output = _run(git_example, crds_dir, "--diff", "--check")
    assert code == 2 and "--diff and --check exclude each other" in output
    (git_example / "jobs" / "mnist-digits.yaml").write_text("name: [unclosed\n")
    code, output = _run(git_example, crds_dir, "--diff")
    assert code == 2 and "jobs/mnist-digits.yaml" in output
