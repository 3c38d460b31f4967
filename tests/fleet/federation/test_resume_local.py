"""`fleet run` resumes a run whose aggregator is killed mid-run, with real processes: a SuperLink keeping its
state in a file, two SuperNodes over mutual TLS, the warm executor, and the tiny app's ServerApp, killed with
SIGKILL as soon as its first round is in (so no last event is written)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from fleet.federation.local import RunSettings, plan_run, run_federation
from fleet.federation.progress import RoundFinished
from fleet.models import Phase
from fleet.repository import load_repository
from tests.fleet.federation.federation_support import TINY_APP, Recorder, no_leftovers, write_data, write_repository

__all__ = ["no_leftovers"]  # a fixture

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("federation")]


def test_a_killed_aggregator_is_resumed_from_its_last_checkpoint(tmp_path: Path, no_leftovers: None) -> None:
    repo = write_repository(tmp_path / "repo", ["alpha", "beta"], rounds=3, round_timeout=20)
    write_data(tmp_path / "data", ["alpha", "beta"])
    plan = plan_run(load_repository(repo), "tiny", tmp_path / "data", tmp_path / "runs")
    killed: dict[str, int] = {}

    def kill_the_serverapp(event: RoundFinished) -> None:
        if killed:
            return
        progress = next((plan.job_dir / "attempts").iterdir()) / "storage" / "progress.jsonl"
        started = [json.loads(line) for line in progress.read_text().splitlines()]
        killed["pid"] = next(e["pid"] for e in started if e["event"] == "started")
        os.kill(killed["pid"], signal.SIGKILL)
        lines = [json.loads(line) for line in progress.read_text().splitlines()]
        killed["last_round"] = max(e["round"] for e in lines if e["event"] == "round")

    observer = Recorder(on_round=kill_the_serverapp)
    result = run_federation(plan, observer, RunSettings(app=TINY_APP, start_timeout=40))

    status = result.status
    assert status.phase is Phase.COMPLETED, status.message
    resume_round = killed["last_round"] + 1
    said = [w for w in observer.warnings if "aggregator died" in w]
    assert len(said) == 1
    assert f"ServerApp pid {killed['pid']} is gone" in said[0]
    assert f"resuming the run at round {resume_round} from the checkpoint of round {killed['last_round']}" in said[0]
    # Every round once: the ones before the checkpoint were not run again, the ones after ran in the new run.
    assert [r.round for r in status.rounds] == [1, 2, 3]
    events = [json.loads(line) for line in (plan.storage_dir / "progress.jsonl").read_text().splitlines()]
    starts = [e for e in events if e["event"] == "started"]
    assert len(starts) == 2 and starts[1]["resumed_from_round"] == killed["last_round"]
    assert [e["round"] for e in events if e["event"] == "round"] == [1, 2, 3]
    # The tiny model is the last round's total of files (one per collaborator): the resumed run's, carried on.
    assert (plan.storage_dir / "model.pt").read_text() == "2.0"
    # The SuperLink kept its state in a file: both runs, the resumed one starting from the lost one's checkpoint.
    with sqlite3.connect(result.attempt.path / "superlink.db") as database:
        configs = [json.loads(r[0]) for r in database.execute("SELECT override_config FROM run ORDER BY rowid")]
    assert [c.get("first-round", 1) for c in configs] == [1, resume_round]
    assert configs[1]["resume-from"].endswith(f"checkpoints/round-{killed['last_round']}.pt")
