"""``fleet status``: a table (or JSON) of the jobs' status files; missing or bad files are reported."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from fleet.cli import main
from fleet.errors import EXIT_INVALID
from fleet.federation.status import STATUS_FILE, write_status
from fleet.federation.workspace import exclusive_run
from fleet.models import FederatedLearningStatus, Phase, RoundStatus


def _status(work_dir: Path, job: str, status: FederatedLearningStatus) -> None:
    write_status(work_dir / job / STATUS_FILE, status)


def test_table_shows_phase_round_clusters_and_last_metric(tmp_path: Path) -> None:
    _status(
        tmp_path,
        "digits",
        FederatedLearningStatus(
            phase=Phase.RUNNING,
            current_round=2,
            total_rounds=5,
            participating_clusters=("eu-central-lab", "eu-west-hospital"),
            rounds=(RoundStatus(round=2, metrics={"train_loss": 0.3, "accuracy": 0.91}),),
            message="round 2 of 5 aggregated",
        ),
    )
    _status(tmp_path, "other", FederatedLearningStatus(phase=Phase.FAILED, message="only 1 of 3 remain\ndetails"))
    with exclusive_run(tmp_path / "digits"):  # as a live `fleet run` of the job holds it
        result = CliRunner().invoke(main, ["status", "--work-dir", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    digits = next(line for line in lines if "digits" in line)
    for expected in ("Running", "2/5", "eu-central-lab, eu-west-hospital", "accuracy 0.9100", "round 2 of 5"):
        assert expected in digits
    other = next(line for line in lines if "other" in line)
    assert "Failed" in other and "only 1 of 3 remain" in other and "details" not in result.output


def test_one_job_as_json(tmp_path: Path) -> None:
    _status(tmp_path, "digits", FederatedLearningStatus(phase=Phase.COMPLETED, final_metrics={"accuracy": 0.97}))
    _status(tmp_path, "other", FederatedLearningStatus())
    result = CliRunner().invoke(main, ["status", "digits", "--work-dir", str(tmp_path), "--output", "json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    assert entry["job"] == "digits"
    assert entry["status"]["phase"] == "Completed"
    assert entry["status"]["finalMetrics"] == {"accuracy": 0.97}


def test_unknown_job_and_bad_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "nothing", "--work-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no status for job 'nothing'" in result.output
    empty = CliRunner().invoke(main, ["status", "--work-dir", str(tmp_path)])
    assert empty.exit_code == 0 and "no job status on" in empty.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / STATUS_FILE).write_text("{not json")
    bad = CliRunner().invoke(main, ["status", "--work-dir", str(tmp_path)])
    assert bad.exit_code == EXIT_INVALID
    assert "broken/status.json" in bad.output and "expected a FederatedLearningStatus" in bad.output


def test_a_corrupt_status_file_hides_no_other_job(tmp_path: Path) -> None:
    _status(tmp_path, "alpha", FederatedLearningStatus(phase=Phase.COMPLETED, final_metrics={"accuracy": 0.97}))
    _status(tmp_path, "gamma", FederatedLearningStatus(phase=Phase.FAILED, message="only 1 of 3 remain"))
    (tmp_path / "beta").mkdir()
    (tmp_path / "beta" / STATUS_FILE).write_bytes(b'{"phase": "Running", "currentRou')  # a truncated write
    table = CliRunner().invoke(main, ["status", "--work-dir", str(tmp_path)], terminal_width=200)
    assert table.exit_code == EXIT_INVALID
    assert "beta/status.json: expected a FederatedLearningStatus in JSON" in table.stderr
    assert "Completed" in table.stdout and "accuracy 0.9700" in table.stdout and "only 1 of 3 remain" in table.stdout
    listed = CliRunner().invoke(main, ["status", "--work-dir", str(tmp_path), "--output", "json"])
    assert listed.exit_code == EXIT_INVALID
    assert [entry["job"] for entry in json.loads(listed.stdout)] == ["alpha", "gamma"]
    one = CliRunner().invoke(main, ["status", "beta", "--work-dir", str(tmp_path)])
    assert one.exit_code == EXIT_INVALID and "beta/status.json" in one.stderr and "no status for" not in one.output


def test_watch_follows_a_job_until_it_completes(tmp_path: Path) -> None:
    job = tmp_path / "digits"
    running = FederatedLearningStatus(
        phase=Phase.RUNNING, current_round=1, total_rounds=3, participating_clusters=("a", "b")
    )
    _status(tmp_path, "digits", running)
    started = threading.Event()

    def run_the_job() -> None:
        with exclusive_run(job):  # as a live `fleet run` holds it: Running is not read as crashed
            started.set()
            for number in (2, 3):
                time.sleep(0.4)
                _status(tmp_path, "digits", running.model_copy(update={"current_round": number}))
            time.sleep(0.4)
            done = running.model_copy(update={"phase": Phase.COMPLETED, "current_round": 3, "message": "completed"})
            _status(tmp_path, "digits", done)

    worker = threading.Thread(target=run_the_job)
    worker.start()
    started.wait(5)
    try:
        arguments = ["status", "digits", "--work-dir", str(tmp_path), "--watch", "--interval", "0.05"]
        result = CliRunner().invoke(main, arguments, terminal_width=200)
    finally:
        worker.join()
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "digits" in line]
    # Each change shown once, in order: round 1, 2, 3 while Running, then Completed; then the watch ends.
    assert [("Completed" if "Completed" in r else "Running", r.split()[5]) for r in rows] == [
        ("Running", "1/3"),
        ("Running", "2/3"),
        ("Running", "3/3"),
        ("Completed", "3/3"),
    ]


def test_watch_exits_1_when_the_job_fails(tmp_path: Path) -> None:
    _status(tmp_path, "digits", FederatedLearningStatus(phase=Phase.FAILED, message="failed: round 2 timed out"))
    result = CliRunner().invoke(
        main, ["status", "digits", "--work-dir", str(tmp_path), "--watch", "--interval", "0.05"]
    )
    assert result.exit_code == 1, result.output
    assert "round 2 timed out" in result.output
