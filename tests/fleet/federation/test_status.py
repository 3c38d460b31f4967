"""The status file: the custom resource's status shape, written atomically, read back by `fleet status`."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from fleet.federation.progress import Completed, RoundFinished
from fleet.federation.status import (
    STATUS_FILE,
    LocalStatusSource,
    StatusRecorder,
    read_status,
    write_status,
)
from fleet.federation.workspace import LOCK_FILE, exclusive_run
from fleet.lifecycle import SubmitRun
from fleet.models import (
    FederatedLearningSpec,
    FederatedLearningStatus,
    Phase,
)
from tests.fleet.specs import T0, job_spec


def _spec(rounds: int = 2, minimum: int = 2, wait: int = 600) -> FederatedLearningSpec:
    return job_spec(minimum, rounds, wait)


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


def test_a_local_run_moves_through_the_hub_phases_and_conditions(tmp_path: Path) -> None:
    path = tmp_path / "job" / STATUS_FILE
    recorder = StatusRecorder(path, _spec(), ["a", "b", "c"], clock=_Clock())
    waiting = read_status(path)
    assert waiting.phase is Phase.WAITING
    assert {c.type: c.reason for c in waiting.conditions} == {
        "PlacementSatisfied": "EnoughClusters",
        "FederationReady": "AggregatorStarting",
        "Training": "WaitingForFederation",
        "SpecAccepted": "Applied",
    }
    recorder.federation_ready()
    decision = recorder.available(["a", "b", "c"])
    assert any(isinstance(action, SubmitRun) for action in decision.actions)
    assert read_status(path).phase is Phase.RUNNING
    assert not any(isinstance(a, SubmitRun) for a in recorder.submitted().actions)
    recorder.progress([RoundFinished(1, ("a", "b", "c"), {"accuracy": 0.5}, "2026-01-01T00:00:00Z")])
    raw = json.loads(path.read_text())
    assert raw["phase"] == "Running"
    assert raw["currentRound"] == 1
    assert raw["totalRounds"] == 2
    assert raw["participatingClusters"] == ["a", "b", "c"]
    assert raw["rounds"] == [
        {
            "round": 1,
            "participants": ["a", "b", "c"],
            "metrics": {"accuracy": 0.5},
            "finishedAt": "2026-01-01T00:00:00Z",
        }
    ]
    recorder.available(["a", "c"])  # b lost, still at the minimum: the run goes on
    assert read_status(path).participating_clusters == ("a", "c")
    recorder.progress([Completed({"accuracy": 0.9})], "/m/model.pt")
    final = read_status(path)
    assert final.phase is Phase.COMPLETED
    assert final.model_path == "/m/model.pt"
    assert final.final_metrics == {"accuracy": 0.9}
    assert final.finished_at is not None
    conditions = {c.type: (c.status, c.reason) for c in final.conditions}
    assert conditions["Succeeded"] == ("True", "RunCompleted")
    assert conditions["Training"] == ("False", "Completed")
    recorder.failed("too late")  # a terminal status stays
    assert read_status(path) == final
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_failed_keeps_the_reason(tmp_path: Path) -> None:
    recorder = StatusRecorder(tmp_path / STATUS_FILE, _spec(rounds=3), ["a", "b"])
    recorder.failed("only 1 of 3 collaborators remain")
    status = read_status(tmp_path / STATUS_FILE)
    assert status.phase is Phase.FAILED
    assert status.message == "failed: only 1 of 3 collaborators remain"
    assert {c.type: (c.status, c.reason) for c in status.conditions}["Succeeded"] == ("False", "RunFailed")


def test_waiting_longer_than_the_job_allows_fails_with_the_hint(tmp_path: Path) -> None:
    clock = _Clock()
    recorder = StatusRecorder(tmp_path / STATUS_FILE, _spec(wait=60), ["a", "b"], clock=clock)
    recorder.federation_ready()
    recorder.available(["a"])
    clock.now += datetime.timedelta(seconds=59)
    assert recorder.tick().status.phase is Phase.WAITING
    clock.now += datetime.timedelta(seconds=2)
    failed = recorder.tick().status
    assert failed.phase is Phase.FAILED
    assert "waitTimeoutSeconds=60" in failed.message and "1 of 2 required collaborators available" in failed.message


def test_local_source_lists_jobs_by_name_and_reports_a_bad_file_beside_the_others(tmp_path: Path) -> None:
    write_status(tmp_path / "b-job" / STATUS_FILE, FederatedLearningStatus(phase=Phase.COMPLETED, current_round=2))
    write_status(tmp_path / "a-job" / STATUS_FILE, FederatedLearningStatus(phase=Phase.FAILED))
    (tmp_path / "no-status").mkdir()
    source = LocalStatusSource(tmp_path)
    assert [s.job for s in source.statuses()] == ["a-job", "b-job"]
    assert source.statuses("b-job")[0].status.current_round == 2
    assert source.statuses("missing") == []
    assert LocalStatusSource(tmp_path / "nothing").statuses() == []
    (tmp_path / "a-job" / STATUS_FILE).write_text('{"phase": "Sleeping"}')
    bad, good = source.statuses()
    assert bad.job == "a-job" and "a-job/status.json: expected a FederatedLearningStatus" in bad.problem
    assert good.job == "b-job" and not good.problem and good.status.phase is Phase.COMPLETED


def test_a_running_status_without_a_live_run_reads_as_crashed(tmp_path: Path) -> None:
    running = FederatedLearningStatus(phase=Phase.RUNNING, current_round=2, total_rounds=5)
    write_status(tmp_path / "tiny" / STATUS_FILE, running)
    (tmp_path / "tiny" / LOCK_FILE).write_text("4242\n")  # the pid of a run that took the lock, gone now
    (shown,) = LocalStatusSource(tmp_path).statuses()
    assert shown.status.phase is Phase.FAILED
    assert shown.status.message.startswith("failed: crashed: the `fleet run` of this job (pid 4242) ended")
    assert "at round 2/5, Running; `fleet run tiny` runs it again" in shown.status.message
    assert read_status(tmp_path / "tiny" / STATUS_FILE) == running  # a reader changes nothing
    # While a run holds the lock, its status is what it says.
    with exclusive_run(tmp_path / "tiny"):
        (live,) = LocalStatusSource(tmp_path).statuses()
        assert live.status == running


def test_each_transition_is_one_write_with_its_conditions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fleet.federation.status as status_module

    written: list[FederatedLearningStatus] = []
    monkeypatch.setattr(status_module, "write_status", lambda path, status: written.append(status))
    recorder = status_module.StatusRecorder(tmp_path / "status.json", _spec(), ["a", "b"], clock=_Clock())
    recorder.federation_ready()
    recorder.tick()  # nothing changed: nothing written
    recorder.available(["a", "b"])
    recorder.progress([Completed({"accuracy": 0.9})], "/models/m.pt")
    assert [s.phase for s in written] == [Phase.WAITING, Phase.WAITING, Phase.RUNNING, Phase.COMPLETED]
    final = {c.type: c.status for c in written[-1].conditions}
    assert final == {
        "PlacementSatisfied": "True",
        "FederationReady": "True",
        "Training": "False",
        "Succeeded": "True",
        "SpecAccepted": "True",
    }
