"""Follow the ServerApp's ``progress.jsonl``: one JSON object a line, appended as the run goes.

Events (written by fleet.app.server_app): ``started`` (rounds, and where the ServerApp says its pid, the minimum
of clients, the round timeout and the round a resumed run starts after), ``round`` (round, participants,
metrics, time, and where given the round's seconds, the bytes of model update per participant and the clusters
left out), ``completed`` (metrics) and ``failed`` (reason). A line still being written waits for the next read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.jsonl"


@dataclass(frozen=True)
class Started:
    rounds: int
    min_available_clients: int | None = None
    round_timeout: float | None = None
    """Seconds the ServerApp waits at most for each step of a round."""
    time: str | None = None
    pid: int | None = None
    """The ServerApp's process: `fleet run` resumes the run when it dies without a last event."""
    resumed_from_round: int | None = None
    """Set when the run resumes a lost one: the round whose checkpoint it starts from."""


@dataclass(frozen=True)
class RoundFinished:
    round: int
    participants: tuple[str, ...]
    metrics: dict[str, float]
    time: str | None
    seconds: float | None = None
    """The round's duration as the ServerApp measured it."""
    received_bytes: dict[str, int] = field(default_factory=dict)
    """Bytes of model update received from each participant."""
    dropped: tuple[str, ...] = ()
    """The clusters (known by name) sampled for the round and left out."""


@dataclass(frozen=True)
class Completed:
    metrics: dict[str, float]


@dataclass(frozen=True)
class Failed:
    reason: str


Event = Started | RoundFinished | Completed | Failed


@dataclass
class ProgressFollower:
    path: Path
    _offset: int = 0
    _pending: bytes = field(default=b"", repr=False)

    def read(self) -> list[Event]:
        """The events appended since the last read (complete lines only)."""
        try:
            with self.path.open("rb") as source:
                source.seek(self._offset)
                chunk = source.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        events = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                events.append(parse_event(line.decode("utf-8", errors="replace"), f"{self.path} (new line {number})"))
        return events


def parse_event(line: str, where: str) -> Event:
    """One progress line; a line that is not a known event becomes `Failed` naming the problem."""
    try:
        data: Any = json.loads(line)
        kind = data["event"]
        if kind == "started":
            minimum, timeout = data.get("min_available_clients"), data.get("round_timeout")
            pid, resumed = data.get("pid"), data.get("resumed_from_round")
            return Started(
                int(data["rounds"]),
                None if minimum is None else int(minimum),
                None if timeout is None else float(timeout),
                data.get("time"),
                None if pid is None else int(pid),
                None if resumed is None else int(resumed),
            )
        if kind == "round":
            seconds = data.get("seconds")
            return RoundFinished(
                int(data["round"]),
                tuple(str(p) for p in data.get("participants", ())),
                _metrics(data.get("metrics")),
                data.get("time"),
                None if seconds is None else float(seconds),
                {str(k): int(v) for k, v in (data.get("received_bytes") or {}).items()},
                tuple(str(c) for c in data.get("dropped_clusters", ())),
            )
        if kind == "completed":
            return Completed(_metrics(data.get("metrics")))
        if kind == "failed":
            return Failed(str(data.get("reason") or "the ServerApp reported a failure without a reason"))
        raise ValueError(f"unknown event {kind!r}")
    except (ValueError, KeyError, TypeError) as error:
        return Failed(f"{where}: expected a progress event (started, round, completed, failed): {error}")


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}
