"""fleet's ServerApp resumes a lost run from its last round checkpoint to the very model an uninterrupted run
trains: the rounds before the checkpoint are not trained again, and metrics.json keeps them.

The Grid is in memory (its nodes run fleet's real ClientApp, `tests/fleet/app/test_server_app.py`); the
aggregator dies in round 2 as a process does when it is killed: nothing after the last checkpoint is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from flwr.app import Message

from fleet.app.resume import ResumePoint, resume_point, resume_run_config
from fleet.app.task import load_model
from tests.fleet.app.test_server_app import FakeGrid, _nodes, _run, _settings, _task_identity, partitions

__all__ = ["_task_identity", "partitions"]  # fixtures


class _Killed(BaseException):
    """What the process sees of SIGKILL: nothing runs after it (not even the ServerApp's failure handler)."""


class _DiesInRound(FakeGrid):
    def __init__(self, nodes: Iterable[object], round_: int) -> None:
        super().__init__(nodes)  # type: ignore[arg-type]
        self.dies_in = round_

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        if messages and int(messages[0].metadata.group_id) == self.dies_in:
            raise _Killed
        return super().push_messages(messages)


def test_a_resumed_run_trains_the_model_an_uninterrupted_run_trains(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    straight = _settings(tmp_path / "straight", partitions, num_rounds=2)
    _run(FakeGrid(_nodes(partitions, ["alpha", "beta"])), straight)

    lost = _settings(tmp_path / "resumed", partitions, num_rounds=2)
    with pytest.raises(_Killed):
        _run(_DiesInRound(_nodes(partitions, ["alpha", "beta"]), 2), lost)
    point = resume_point(lost.model_dir)
    assert point == ResumePoint(lost.model_dir / "checkpoints" / "round-1.pt", 2)
    assert ResumePoint.from_run_config(resume_run_config(point)) == point

    grid = FakeGrid(_nodes(partitions, ["alpha", "beta"]))
    from fleet.app.server_app import run_federation

    run_federation(grid, lost, poll_interval=0.05, clock=grid.clock, sleep=grid.sleep, resume=point)

    resumed_model, _ = load_model(lost.model_dir / "model.pt")
    straight_model, _ = load_model(straight.model_dir / "model.pt")
    for (name, resumed), (_, expected) in zip(
        resumed_model.state_dict().items(), straight_model.state_dict().items(), strict=True
    ):
        assert torch.equal(resumed, expected), name
    # Round 1 ran once (the lost run's), round 2 once (the resumed run's); metrics.json has both.
    trained = [message for node in grid.nodes.values() for message in node.received if message == "train"]
    assert len(trained) == 1 * 2
    metrics = json.loads((lost.model_dir / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
    events = [json.loads(line) for line in (lost.model_dir / "progress.jsonl").read_text().splitlines()]
    started = [e for e in events if e["event"] == "started"]
    assert len(started) == 2 and started[1]["resumed_from_round"] == 1 and "resumed_from_round" not in started[0]
    assert [e["round"] for e in events if e["event"] == "round"] == [1, 2]
    assert events[-1]["event"] == "completed"


def test_a_fresh_run_has_no_resume_point_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    assert resume_point(tmp_path) is None
    assert ResumePoint.from_run_config(resume_run_config(None)) is None
    from fleet.app.resume import ResumeError

    with pytest.raises(ResumeError, match="expected a checkpoint file"):
        ResumePoint.from_run_config({"resume-from": str(tmp_path / "round-1.pt"), "first-round": 2})
    with pytest.raises(ResumeError, match="at least 2"):
        ResumePoint.from_run_config({"resume-from": str(tmp_path), "first-round": 1})


def test_a_run_with_differential_privacy_is_not_resumed_with_its_budget_counted_from_zero(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    from dataclasses import replace

    from fleet.app.privacy import DifferentialPrivacySettings
    from fleet.app.server_app import FederationError, run_federation
    from fleet.app.task import build_model, save_model

    checkpoint = tmp_path / "model" / "checkpoints" / "round-1.pt"
    save_model(checkpoint, build_model((1, 8, 8)), (1, 8, 8))
    dp = DifferentialPrivacySettings("server", "fixed", 1.0, 1.0, 0.5, 0.2, 1e-5, None, 10.0, 2)
    settings = replace(_settings(tmp_path, partitions, num_rounds=2), differential_privacy=dp)
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta"]))
    with pytest.raises(FederationError, match="cannot resume at round 2 with differential privacy"):
        run_federation(grid, settings, clock=grid.clock, sleep=grid.sleep, resume=ResumePoint(checkpoint, 2))
    assert not any(node.received for node in grid.nodes.values())  # no round ran
