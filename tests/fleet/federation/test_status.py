"""The status file: the custom resource's status shape, written atomically, read back by `fleet status`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.federation.status import (
    STATUS_FILE,
    InvalidStatusError,
    LocalStatusSource,
    StatusRecorder,
    read_status,
    write_status,
)
from fleet.models import FederatedLearningStatus, Phase


def test_recorder_moves_through_the_phases_and_writes_camel_case(tmp_path: Path) -> None:
    path = tmp_path / "job" / STATUS_FILE
    recorder = StatusRecorder(path, total_rounds=2)
    assert read_status(path).phase is Phase.WAITING
    recorder.waiting("nodes connecting", ["a", "b"])
    recorder.running("run 7 submitted")
    recorder.round(1, ["a", "b"], {"accuracy": 0.5}, "2026-01-01T00:00:00Z")
    raw = json.loads(path.read_text())
    assert raw["phase"] == "Running"
    assert raw["currentRound"] == 1
    assert raw["totalRounds"] == 2
    assert raw["participatingClusters"] == ["a", "b"]
    assert raw["rounds"] == [
        {
            "round": 1,
            "participants": ["a", "b"],
            "metrics": {"accuracy": 0.5},
            "finishedAt": "2026-01-01T00:00:00Z",
        }
    ]
    recorder.clusters(["a"])
    recorder.completed("/m/model.pt", {"accuracy": 0.9}, "done")
    final = read_status(path)
    assert final.phase is Phase.COMPLETED
    assert final.model_path == "/m/model.pt"
    assert final.final_metrics == {"accuracy": 0.9}
    assert final.participating_clusters == ("a",)
    assert final.finished_at is not None
    conditions = {c.type: c for c in final.conditions}
    assert conditions["Completed"].status == "True"
    assert conditions["Running"].status == "False"
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_failed_keeps_the_reason(tmp_path: Path) -> None:
    recorder = StatusRecorder(tmp_path / STATUS_FILE, total_rounds=3)
    recorder.failed("only 1 of 3 collaborators remain")
    status = read_status(tmp_path / STATUS_FILE)
    assert status.phase is Phase.FAILED
    assert status.message == "only 1 of 3 collaborators remain"
    assert {c.type: c.status for c in status.conditions}["Failed"] == "True"


def test_local_source_lists_jobs_by_name_and_rejects_a_bad_file(tmp_path: Path) -> None:
    write_status(tmp_path / "b-job" / STATUS_FILE, FederatedLearningStatus(phase=Phase.RUNNING, current_round=2))
    write_status(tmp_path / "a-job" / STATUS_FILE, FederatedLearningStatus())
    (tmp_path / "no-status").mkdir()
    source = LocalStatusSource(tmp_path)
    assert [s.job for s in source.statuses()] == ["a-job", "b-job"]
    assert source.statuses("b-job")[0].status.current_round == 2
    assert source.statuses("missing") == []
    assert LocalStatusSource(tmp_path / "nothing").statuses() == []
    (tmp_path / "a-job" / STATUS_FILE).write_text('{"phase": "Sleeping"}')
    with pytest.raises(InvalidStatusError, match=r"a-job/status\.json"):
        source.statuses()


def test_each_transition_is_one_write_with_its_conditions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fleet.federation.status as status_module

    written: list[FederatedLearningStatus] = []
    monkeypatch.setattr(status_module, "write_status", lambda path, status: written.append(status))
    recorder = status_module.StatusRecorder(tmp_path / "status.json", total_rounds=2)
    recorder.waiting("nodes connecting")
    recorder.running("training")
    recorder.completed("/models/m.pt", {"accuracy": 0.9}, "done")
    assert [s.phase for s in written] == [Phase.WAITING, Phase.WAITING, Phase.RUNNING, Phase.COMPLETED]
    final = {c.type: c.status for c in written[-1].conditions}
    assert final == {"Running": "False", "Completed": "True"}
