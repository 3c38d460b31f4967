"""The status of federated-learning jobs: written by `fleet run`, read by `fleet status`.

The status has one shape, `fleet.models.FederatedLearningStatus`, the custom resource's. A local run keeps it
in ``<work-dir>/<job>/status.json`` (camelCase, as the resource carries it). Readers go through a
`StatusSource`, so that a second source (the hub, through a kubeconfig) plugs in next to `LocalStatusSource`.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from fleet.lifecycle import rfc3339
from fleet.models import MAX_ROUND_HISTORY, Condition, FederatedLearningStatus, Phase, RoundStatus

STATUS_FILE = "status.json"


class InvalidStatusError(Exception):
    """A status file that does not hold a FederatedLearningStatus."""


@dataclass(frozen=True)
class JobStatus:
    job: str
    status: FederatedLearningStatus
    source: str
    """Where the status was read (a file path, or a hub object)."""


class StatusSource(Protocol):
    def statuses(self, job: str | None = None) -> list[JobStatus]:
        """The status of ``job``, or of every job the source knows, by job name."""
        ...


@dataclass(frozen=True)
class LocalStatusSource:
    """Status files of local runs: ``<work_dir>/<job>/status.json``."""

    work_dir: Path

    def statuses(self, job: str | None = None) -> list[JobStatus]:
        if job is not None:
            folders = [self.work_dir / job]
        elif self.work_dir.is_dir():
            folders = sorted(p for p in self.work_dir.iterdir() if p.is_dir())
        else:
            folders = []
        found = []
        for folder in folders:
            path = folder / STATUS_FILE
            if path.is_file():
                found.append(JobStatus(folder.name, read_status(path), str(path)))
        return found


def read_status(path: Path) -> FederatedLearningStatus:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return FederatedLearningStatus.model_validate(data)
    except (OSError, ValueError, ValidationError) as error:
        raise InvalidStatusError(f"{path}: expected a FederatedLearningStatus in JSON: {error}") from error


def write_status(path: Path, status: FederatedLearningStatus) -> None:
    """Replace ``path`` atomically, so that a reader never sees half a status."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(status.model_dump(mode="json", by_alias=True), indent=2) + "\n"
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class StatusRecorder:
    """Moves one job's status through Waiting -> Running -> Completed or Failed, writing every change."""

    def __init__(self, path: Path, total_rounds: int) -> None:
        self.path = path
        self.status = FederatedLearningStatus(
            phase=Phase.WAITING, total_rounds=total_rounds, started_at=now(), message="starting"
        )
        self._write()

    def waiting(self, message: str, clusters: Iterable[str] = ()) -> None:
        self._update(
            phase=Phase.WAITING,
            message=message,
            participating_clusters=tuple(clusters),
            conditions=self._conditions(("Running", "False", "Waiting", message)),
        )

    def clusters(self, names: Iterable[str]) -> None:
        """The collaborators taking part now (one that is lost or refused drops out)."""
        self._update(participating_clusters=tuple(names))

    def running(self, message: str) -> None:
        self._update(
            phase=Phase.RUNNING,
            message=message,
            conditions=self._conditions(("Running", "True", "CollaboratorsConnected", message)),
        )

    def round(self, number: int, participants: Iterable[str], metrics: Mapping[str, float], at: str | None) -> None:
        entry = RoundStatus(round=number, participants=tuple(participants), metrics=dict(metrics), finished_at=at)
        rounds = (*(r for r in self.status.rounds if r.round != number), entry)[-MAX_ROUND_HISTORY:]
        self._update(
            phase=Phase.RUNNING,
            current_round=number,
            rounds=rounds,
            message=f"round {number} of {self.status.total_rounds} aggregated",
        )

    def completed(self, model_path: str, metrics: Mapping[str, float], message: str) -> None:
        self._update(
            phase=Phase.COMPLETED,
            model_path=model_path,
            final_metrics=dict(metrics),
            message=message,
            finished_at=now(),
            conditions=self._conditions(
                ("Running", "False", "Completed", message), ("Completed", "True", "Completed", message)
            ),
        )

    def failed(self, reason: str) -> None:
        self._update(
            phase=Phase.FAILED,
            message=reason,
            finished_at=now(),
            conditions=self._conditions(("Running", "False", "Failed", reason), ("Failed", "True", "Failed", reason)),
        )

    def _update(self, **changes: object) -> None:
        """One transition, one write: a reader never sees a phase without its conditions."""
        data = self.status.model_dump()
        data.update(changes)
        self.status = FederatedLearningStatus.model_validate(data)
        self._write()

    def _conditions(self, *changes: tuple[str, str, str, str]) -> tuple[Condition, ...]:
        """The conditions with ``(type, status, reason, message)`` changes applied; lastTransitionTime moves
        only when a condition's status changes."""
        conditions = {c.type: c for c in self.status.conditions}
        for kind, state, reason, message in changes:
            old = conditions.get(kind)
            since = old.last_transition_time if old is not None and old.status == state else now()
            conditions[kind] = Condition(
                type=kind, status=state, reason=reason, message=message, last_transition_time=since
            )
        return tuple(conditions.values())

    def _write(self) -> None:
        write_status(self.path, self.status)


def now() -> str:
    return rfc3339(datetime.datetime.now(datetime.UTC))
