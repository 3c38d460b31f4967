"""Following the ServerApp's progress.jsonl."""

from __future__ import annotations

from pathlib import Path

from fleet.federation.progress import Completed, Failed, ProgressFollower, RoundFinished, Started


def test_follower_returns_complete_lines_once(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    follower = ProgressFollower(path)
    assert follower.read() == []  # not written yet
    path.write_text('{"event": "started", "rounds": 2}\n{"event": "round", "round": 1, "partic')
    assert follower.read() == [Started(2)]
    with path.open("a") as out:
        out.write('ipants": ["a", "b"], "metrics": {"accuracy": 0.5, "note": "x"}, "time": "t"}\n')
    assert follower.read() == [RoundFinished(1, ("a", "b"), {"accuracy": 0.5}, "t")]
    assert follower.read() == []
    with path.open("a") as out:
        out.write('{"event": "completed", "metrics": {"accuracy": 0.9}}\n')
    assert follower.read() == [Completed({"accuracy": 0.9})]


def test_failed_and_unknown_events(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    path.write_text('{"event": "failed", "reason": "round 2: 1 of 2 replied"}\n{"event": "paused"}\nnot json\n')
    events = ProgressFollower(path).read()
    assert events[0] == Failed("round 2: 1 of 2 replied")
    assert isinstance(events[1], Failed) and "unknown event 'paused'" in events[1].reason
    assert isinstance(events[2], Failed) and "expected a progress event" in events[2].reason
