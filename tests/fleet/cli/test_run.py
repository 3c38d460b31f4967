"""``fleet run``: bad input exits 2 before anything starts; a run completes; Ctrl-C leaves no process behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from fleet.cli import main
from fleet.errors import EXIT_INVALID
from fleet.federation.status import STATUS_FILE, read_status
from fleet.models import Phase
from tests.fleet.federation.federation_support import (
    FLEET,
    TINY_APP,
    fleet_run_tiny,
    flower_processes,
    no_leftovers,
    wait_until,
    write_data,
    write_repository,
)

__all__ = ["no_leftovers"]  # a fixture


def test_invalid_repository_exits_2_listing_the_problems(example_repo: Path, tmp_path: Path) -> None:
    job = example_repo / "jobs" / "mnist-digits.yaml"
    job.write_text(job.read_text().replace("rounds: 5", "rounds: five"))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", "mnist-digits", "--repo", str(example_repo), "--work-dir", str(runs)])
    assert result.exit_code == EXIT_INVALID
    assert "jobs/mnist-digits.yaml:" in result.output and "rounds: expected a whole number" in result.output
    assert "nothing was run" in result.output
    assert not runs.exists()


def test_unknown_job_exits_2(example_repo: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "nope", "--repo", str(example_repo), "--work-dir", str(tmp_path)])
    assert result.exit_code == EXIT_INVALID
    assert "no job named 'nope'" in result.output and "mnist-digits" in result.output


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (None, "pyproject.toml: cannot read the app's manifest"),
        ("[tool.flwr\n", "pyproject.toml: not valid TOML"),
        (
            "[project]\nname = 'mine'\n",
            "tool.flwr.app.components.serverapp: expected a 'module:attribute' reference, it is missing",
        ),
        (
            "[tool.flwr.app.components]\nserverapp = 'pkg.server:app'\nclientapp = 'pkg/client.py'\n",
            "tool.flwr.app.components.clientapp: expected a 'module:attribute' reference, got 'pkg/client.py'",
        ),
    ],
)
def test_malformed_app_folder_exits_2_naming_file_and_field(
    example_repo: Path, tmp_path: Path, manifest: str | None, expected: str
) -> None:
    app = tmp_path / "mine"
    app.mkdir()
    if manifest is not None:
        (app / "pyproject.toml").write_text(manifest)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        main, ["run", "mnist-digits", "--repo", str(example_repo), "--work-dir", str(runs), "--app", str(app)]
    )
    assert result.exit_code == EXIT_INVALID, result.output
    assert f"fleet run: --app: {app / 'pyproject.toml'}" in result.output
    assert expected in result.output
    assert not runs.exists()


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
def test_run_prints_the_final_metrics_and_where_the_model_is(tmp_path: Path, no_leftovers: None) -> None:
    write_repository(tmp_path / "repo", ["alpha", "beta"])
    write_data(tmp_path / "data", ["alpha", "beta"])
    result = subprocess.run(
        fleet_run_tiny(tmp_path, "--app", str(TINY_APP)), capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "running job tiny: 2 rounds, 2 collaborators, TLS on" in result.stderr
    assert "tiny: completed" in result.stderr and "files" in result.stderr
    storage = tmp_path / "runs" / "tiny" / "storage" / "models" / "tiny"
    assert str(storage / "model.pt") in result.stderr
    status = read_status(tmp_path / "runs" / "tiny" / STATUS_FILE)
    assert status.phase is Phase.COMPLETED and status.current_round == 2
    # The training curve beside the model: fleet evaluate's figure (1000 x 380 pixels) of the run's rounds.
    assert f"training curve: {storage / 'training-curve.png'}" in result.stderr
    png = (storage / "training-curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1000, 380)
    assert not [p.name for p in storage.iterdir() if p.name.startswith(".")]  # no staging file left behind


def _start_long_run(tmp_path: Path, write: bool = True) -> tuple[subprocess.Popen[str], Path, list[psutil.Process]]:
    """A 50-round run of the tiny app in its own session, once round 1 is in: the process, its status file and
    the processes of its federation. ``write=False``: the repository and data are there already."""
    if write:
        write_repository(tmp_path / "repo", ["alpha", "beta"], rounds=50)
        write_data(tmp_path / "data", ["alpha", "beta"])
    status_file = tmp_path / "runs" / "tiny" / STATUS_FILE
    process = subprocess.Popen(
        fleet_run_tiny(tmp_path, "--app", str(TINY_APP)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: _running_round(status_file) >= 1,
            120,
            "round 1",
        )
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    started = flower_processes(str(tmp_path))
    assert len(started) >= 5  # SuperLink, 2 SuperNodes, the executor and its ServerApp
    return process, status_file, started


def _running_round(status_file: Path) -> int:
    """The round a running job is at; 0 before (or after) it runs."""
    if not status_file.is_file():
        return 0
    status = json.loads(status_file.read_text())
    return int(status["currentRound"]) if status["phase"] == "Running" else 0


def _checksums(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
def test_ctrl_c_stops_every_process(tmp_path: Path, no_leftovers: None) -> None:
    process, status_file, started = _start_long_run(tmp_path)
    try:
        os.kill(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 1
    assert "interrupted by SIGINT" in stderr
    assert read_status(status_file).phase is Phase.FAILED
    deadline = time.monotonic() + 5
    while flower_processes(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p.pid for p in started if p.is_running() and p.status() != "zombie"]


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal is Linux only")
def test_sigkill_leaves_no_process_behind(tmp_path: Path, no_leftovers: None) -> None:
    """fleet run gets no chance to clean up; what it started stops with it all the same."""
    process, _, _ = _start_long_run(tmp_path)
    try:
        process.kill()
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    wait_until(lambda: not flower_processes(str(tmp_path)), 20, "every process of the run to stop")


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
def test_a_second_run_of_the_same_job_is_refused_with_the_first_ones_pid(tmp_path: Path, no_leftovers: None) -> None:
    process, status_file, _ = _start_long_run(tmp_path)
    job_dir = tmp_path / "runs" / "tiny"
    try:
        attempts = sorted((job_dir / "attempts").iterdir())
        first = _checksums(attempts[0] / "certs")
        second = subprocess.run(
            fleet_run_tiny(tmp_path, "--app", str(TINY_APP)), capture_output=True, text=True, timeout=60, check=False
        )
        assert second.returncode == EXIT_INVALID, second.stderr
        assert f"job 'tiny' is already running on this machine (pid {process.pid}" in second.stderr
        # The first run's folder, credentials and status are its own still.
        assert sorted((job_dir / "attempts").iterdir()) == attempts
        assert _checksums(attempts[0] / "certs") == first
        assert _running_round(status_file) >= 1
        assert process.poll() is None
    finally:
        os.kill(process.pid, signal.SIGINT)
        process.communicate(timeout=60)


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
def test_a_killed_run_shows_as_crashed_and_the_last_completed_model_stays_whole(
    tmp_path: Path, no_leftovers: None
) -> None:
    write_repository(tmp_path / "repo", ["alpha", "beta"], rounds=2)
    write_data(tmp_path / "data", ["alpha", "beta"])
    completed = subprocess.run(
        fleet_run_tiny(tmp_path, "--app", str(TINY_APP)), capture_output=True, text=True, timeout=180, check=False
    )
    assert completed.returncode == 0, completed.stderr
    storage = tmp_path / "runs" / "tiny" / "storage" / "models" / "tiny"
    before = _checksums(storage)
    assert {"model.pt", "checkpoints/round-1.pt", "checkpoints/round-2.pt"} <= before.keys()

    job = tmp_path / "repo" / "jobs" / "tiny.yaml"
    job.write_text(job.read_text().replace("rounds: 2", "rounds: 50"))
    process, status_file, _ = _start_long_run(tmp_path, write=False)
    process.kill()  # no code of fleet run's runs: the status file still says Running
    process.communicate(timeout=10)
    wait_until(lambda: not flower_processes(str(tmp_path)), 20, "every process of the run to stop")
    assert read_status(status_file).phase is Phase.RUNNING

    shown = subprocess.run(
        [FLEET, "status", "tiny", "--work-dir", str(tmp_path / "runs"), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)
    assert entry["status"]["phase"] == "Failed"
    assert f"crashed: the `fleet run` of this job (pid {process.pid})" in entry["status"]["message"]
    # The killed run's round-1 checkpoint is in its own folder, not beside the completed run's model.
    assert _checksums(storage) == before
    newest = sorted((tmp_path / "runs" / "tiny" / "attempts").iterdir())[-1]
    assert (newest / "storage" / "checkpoints" / "round-1.pt").is_file()


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
def test_example_job_trains_with_fleets_own_app(
    example_repo: Path, tmp_path: Path, no_leftovers: None, mnist_cache: Path
) -> None:
    """The real ServerApp and ClientApp, the example's placement and data, two rounds."""
    from fleet.data import mnist_source, prepare
    from fleet.repository import load_repository

    job = example_repo / "jobs" / "mnist-digits.yaml"
    # Two short rounds on the MNIST partitions (one local epoch each): the app end to end, not the quality bar.
    job.write_text(job.read_text().replace("rounds: 5", "rounds: 2").replace("localEpochs: 3", "localEpochs: 1"))
    data = tmp_path / "data"
    prepare(load_repository(example_repo), data, "mnist-digits", source=lambda: mnist_source(mnist_cache))
    command = [FLEET, "run", "mnist-digits", "--repo", str(example_repo), "--data-root", str(data)]
    command += ["--work-dir", str(tmp_path / "runs")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    status = read_status(tmp_path / "runs" / "mnist-digits" / STATUS_FILE)
    assert status.phase is Phase.COMPLETED
    assert status.participating_clusters == ("eu-central-lab", "eu-west-hospital", "eu-west-university")
    assert status.final_metrics["accuracy"] > 0.5
    storage = tmp_path / "runs" / "mnist-digits" / "storage" / "models" / "mnist-digits"
    for name in ("model.pt", "metrics.json", "model-card.md", "checkpoints/round-2.pt"):
        assert (storage / name).is_file(), name
    card = (storage / "model-card.md").read_text()
    assert "eu-central-lab, eu-west-hospital, eu-west-university" in card


def test_a_job_file_where_a_name_is_expected_names_the_job_or_says_what_to_pass(
    example_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(example_repo)
    by_path = CliRunner().invoke(main, ["plan", "jobs/mnist-digits.yaml", "--output", "json"])
    by_name = CliRunner().invoke(main, ["plan", "mnist-digits", "--output", "json"])
    assert by_path.exit_code == 0, by_path.output
    assert by_path.stdout == by_name.stdout
    runs = tmp_path / "runs"
    for argument in ("jobs/nothing.yaml", "clusters/eu-west-hospital.yaml", "mnist-digits.yaml"):
        result = CliRunner().invoke(main, ["run", argument, "--work-dir", str(runs)])
        assert result.exit_code == EXIT_INVALID, result.output
        assert f"fleet run: {argument}: expected a job name (the `name:` in a file under" in result.stderr
        assert "or the path of such a file; it is neither (jobs: mnist-digits, mnist-digits-openfl)" in result.stderr
    assert not runs.exists()
