"""The status of federated-learning jobs: written by `fleet run`, read by `fleet status`.

The status has one shape, `fleet.models.FederatedLearningStatus`, the custom resource's. A local run keeps it
in ``<work-dir>/<job>/status.json`` (camelCase, as the resource carries it). Readers go through a
`StatusSource`, so that a second source (the hub, through a kubeconfig) plugs in next to `LocalStatusSource`.

A local status that says Waiting or Running while no `fleet run` holds the job's lock (`workspace`) belongs to
a run that died without recording its end (SIGKILL, a power cut): it is read as Failed, saying so.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from fleet.app.files import write_text_atomically
from fleet.federation.progress import Event
from fleet.federation.workspace import lock_holder
from fleet.lifecycle import Observation, Step, rfc3339, step
from fleet.models import FederatedLearningSpec, FederatedLearningStatus, Phase

STATUS_FILE = "status.json"


class InvalidStatusError(Exception):
    """A status file that does not hold a FederatedLearningStatus."""


@dataclass(frozen=True)
class JobStatus:
    job: str
    status: FederatedLearningStatus
    source: str
    """Where the status was read (a file path, or a hub object)."""
    problem: str = ""
    """Why the status could not be read (then ``status`` is empty): one bad file hides no other job."""


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
            if not path.exists():
                continue  # no run of this job recorded a status (yet)
            if not path.is_file():  # a folder or a FIFO where the file belongs: unreadable, never opened
                what = "a folder" if path.is_dir() else "not a regular file"
                problem = f"{path}: expected a FederatedLearningStatus in JSON, a file; it is {what}"
                found.append(JobStatus(folder.name, FederatedLearningStatus(), str(path), problem=problem))
                continue
            try:
                found.append(JobStatus(folder.name, _as_observed(path), str(path)))
            except InvalidStatusError as error:
                found.append(JobStatus(folder.name, FederatedLearningStatus(), str(path), problem=str(error)))
        return found


def _as_observed(path: Path) -> FederatedLearningStatus:
    """The status in ``path``; Failed if it says the run goes on but no run of the job is alive."""
    status = read_status(path)
    if status.phase not in (Phase.WAITING, Phase.RUNNING):
        return status
    running, pid = lock_holder(path.parent)
    if running:
        return status
    # The run may have ended between the two reads: its last write comes before it lets go of the lock.
    status = read_status(path)
    if status.phase not in (Phase.WAITING, Phase.RUNNING):
        return status
    who = f"pid {pid}" if pid is not None else "its process"
    return status.model_copy(
        update={
            "phase": Phase.FAILED,
            "message": f"failed: crashed: the `fleet run` of this job ({who}) ended without recording an end "
            f"(killed, or the machine stopped) at round {status.current_round}/{status.total_rounds}, "
            f"{status.phase.value}; `fleet run {path.parent.name}` runs it again",
        }
    )


def read_status(path: Path) -> FederatedLearningStatus:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return FederatedLearningStatus.model_validate(data)
    except (OSError, ValueError, ValidationError) as error:
        raise InvalidStatusError(f"{path}: expected a FederatedLearningStatus in JSON: {error}") from error


def write_status(path: Path, status: FederatedLearningStatus) -> None:
    """Replace ``path`` atomically, so that a reader never sees half a status."""
    write_text_atomically(path, json.dumps(status.model_dump(mode="json", by_alias=True), indent=2) + "\n")


class StatusRecorder:
    """A local run's status, moved by the hub's phase machine (`fleet.lifecycle.step`): the same phases,
    conditions, reasons and messages as the controller writes, so ``fleet status`` reads one vocabulary.

    ``fleet run`` reports what it observes (the SuperLink is up, which collaborators are connected, that the
    run is submitted, the ServerApp's progress events, a failure); each report is one `step`, and a status that
    changed is written at once, whole (one write per transition).
    """

    def __init__(
        self,
        path: Path,
        spec: FederatedLearningSpec,
        selected: Iterable[str],
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.path = path
        self.spec = spec
        self.clock = clock
        self.status = FederatedLearningStatus()
        self._written = False
        self._observed = Observation(now=clock(), selected_clusters=tuple(selected))
        self._step()

    def tick(self) -> Step:
        """Nothing new observed, only time passing (how a job that waits too long fails)."""
        return self._step()

    def federation_ready(self) -> Step:
        return self._step(federation_ready=True)

    def available(self, clusters: Iterable[str]) -> Step:
        """The collaborators connected now (one lost or refused drops out)."""
        return self._step(available_clusters=frozenset(clusters))

    def submitted(self) -> Step:
        return self._step(run_submitted=True)

    def progress(self, events: Iterable[Event], model_path: str = "") -> Step:
        """The ServerApp's progress events; ``model_path`` with the ``completed`` event."""
        return self._step(events=tuple(events), model_path=model_path or self._observed.model_path)

    def failed(self, reason: str) -> Step:
        """The run cannot go on (a terminal status stays as it is)."""
        return self._step(run_failure=reason)

    def _step(self, **observed: Any) -> Step:
        # Events are what is new since the last step; everything else is the world as last seen.
        changes: dict[str, Any] = {"now": self.clock(), "events": (), **observed}
        self._observed = replace(self._observed, **changes)
        result = step(self.spec, self.status, self._observed)
        if result.status != self.status or not self._written:
            self.status = result.status
            write_status(self.path, self.status)
            self._written = True
        return result


def now() -> str:
    return rfc3339(datetime.datetime.now(datetime.UTC))
