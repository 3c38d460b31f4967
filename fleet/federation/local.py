"""Run a job on this machine as a real federation of its framework (`fleet.runtimes`): an aggregator and one
collaborator per placed cluster, real processes over mutual TLS.

`plan_run` places the job with the same evaluator as ``fleet plan`` and maps each selected cluster's claimed
data path under the local data root. `run_federation` then runs the job's runtime's `LocalRun` (Flower's
`fleet.federation.flower_runtime.FlowerRun`, OpenFL's `fleet.federation.openfl_runtime.OpenFLRun`), which starts
the processes; what every runtime shares is here: following the aggregator's ``progress.jsonl``, the status file
and the phase machine, losing collaborators, the model card, publishing the storage, and stopping every process
it started, whatever happens (`processes.ProcessSupervisor`).

One run of a job at a time: the run holds the job's lock, writes everything into an attempt folder of its own
and publishes the model storage only when it completed (`workspace`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import ClassVar, Literal, Protocol

from fleet.app.files import write_text_atomically
from fleet.app.storage import MANIFEST, S3Location, StorageError, publish_run
from fleet.data import mapped_path
from fleet.federation.processes import ManagedProcess, ProcessSupervisor
from fleet.federation.progress import (
    PROGRESS_FILE,
    Completed,
    Event,
    Failed,
    ProgressFollower,
    RoundFinished,
    Started,
)
from fleet.federation.run_config import run_config
from fleet.federation.status import STATUS_FILE, StatusRecorder, now
from fleet.federation.workspace import AlreadyRunningError, Attempt, exclusive_run, publish
from fleet.models import FederatedLearningSpec, FederatedLearningStatus, Job
from fleet.placement import placement_spec
from fleet.plan import exclusion_reasons
from fleet.repository import Repository

Executor = Literal["warm", "flower"]
_START_TIMEOUT = 90.0
TICK = 0.2
"""Seconds between looks at the aggregator's progress."""
MODEL_CARD = "model-card.md"
MODEL_FILE = "model.pt"


class RunError(Exception):
    """The job cannot run here, or the federation failed; the message says why."""


@dataclass(frozen=True)
class Collaborator:
    cluster: str
    data_path: Path
    """The cluster's claimed dataset path, mapped under the local data root."""


@dataclass(frozen=True)
class LocalPlan:
    job: Job
    repository_root: Path
    collaborators: tuple[Collaborator, ...]
    """Placed clusters whose data is present."""
    excluded: dict[str, str]
    """Placed clusters left out, with the reason (their data is missing or unreadable)."""
    job_dir: Path
    """``<work-dir>/<job>``: the run lock, the status, one folder per attempt (`workspace`)."""
    storage_dir: Path
    """The job's model storage mapped locally: the last completed run's checkpoints, model, metrics, card."""
    spec: FederatedLearningSpec
    """The job as its FederatedLearning resource would carry it: what the phase machine reads."""


@dataclass(frozen=True)
class RunSettings:
    executor: Executor = "warm"
    task_poll_interval: float = 0.05
    """Seconds between the SuperExec's polls for new tasks (Flower's default: 1)."""
    start_timeout: float = _START_TIMEOUT
    """Seconds for the processes to start and every SuperNode to connect."""
    seed: int = 0
    app: Path | None = None
    """A folder with a FAB ``pyproject.toml`` and the app's packages to run instead of fleet's own app."""


class Observer(Protocol):
    """What `run_federation` reports while it runs (the CLI draws a progress bar from it)."""

    def phase(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def started(self, rounds: int, clusters: tuple[str, ...]) -> None: ...

    def round(self, event: RoundFinished) -> None: ...


class _InterruptedError(BaseException):
    """Like KeyboardInterrupt, not an Exception: no ``except Exception`` on the way may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def local_storage_dir(job: Job, job_dir: Path) -> Path:
    """The job's model storage on this machine: the PVC path, or a folder named after S3 bucket and prefix."""
    storage = job_dir / "storage"
    if job.storage.pvc is not None:
        return storage / job.storage.pvc.path.lstrip("/")
    assert job.storage.s3 is not None
    return storage / "s3" / job.storage.s3.bucket / job.storage.s3.prefix.strip("/")


def plan_run(repository: Repository, job_name: str, data_root: Path, work_dir: Path) -> LocalPlan:
    """Place ``job_name`` over the repository's clusters; raise `RunError` when it cannot run."""
    job = repository.jobs.get(job_name)
    if job is None:
        known = ", ".join(repository.jobs) or "none"
        raise RunError(f"no job named {job_name!r} under {repository.root / 'jobs'} (jobs: {known})")
    result = repository.placement(job)
    selected = result.selected
    if len(selected) < job.min_available_clients:
        out = "; ".join(
            f"{d.cluster}: {', '.join(exclusion_reasons(repository, job, d))}"
            for d in result.decisions
            if not d.selected
        )
        raise RunError(
            f"job {job.name!r} needs minAvailableClients={job.min_available_clients} collaborators, but "
            f"placement selects {len(selected)} ({', '.join(selected) or 'none'}); left out: {out or 'none'}"
        )
    collaborators, excluded = [], {}
    for name in selected:
        claim = repository.clusters[name].datasets[job.dataset]
        path = mapped_path(data_root, claim.path)
        problem = _data_problem(path)
        if problem:
            excluded[name] = (
                f"collaborator {name}: its data path {claim.path} (locally {path}) {problem}; "
                f"`fleet data prepare` writes the example partitions"
            )
        else:
            collaborators.append(Collaborator(name, path.resolve()))
    if len(collaborators) < job.min_available_clients:
        # Known before anything starts: bad input, refused with nothing written.
        raise RunError(
            f"only {len(collaborators)} of the placed clusters have their data under --data-root {data_root}, "
            f"job {job.name!r} needs minAvailableClients={job.min_available_clients}: " + "; ".join(excluded.values())
        )
    job_dir = (work_dir / job.name).resolve()
    return LocalPlan(
        job,
        repository.root.resolve(),
        tuple(collaborators),
        excluded,
        job_dir,
        local_storage_dir(job, job_dir),
        FederatedLearningSpec.from_job(job, placement_spec(job, repository.policies.values())),
    )


@dataclass(frozen=True)
class RunResult:
    status: FederatedLearningStatus
    """Completed, or Failed with the reason."""
    attempt: Attempt
    """The run's own folder: its logs, credentials, and its storage when it did not complete."""


def check_test_data(plan: LocalPlan, test_data: Path) -> None:
    """Refuse (`RunError`) a held-out split the ServerApp could not read or that does not fit the collaborators'
    data, before anything starts: the ServerApp would only find out after the first round."""
    from fleet.app.data import DataError, load_dataset

    try:
        test = load_dataset(test_data)
        if not plan.collaborators:
            return
        first = plan.collaborators[0]
        train = load_dataset(first.data_path, cluster=first.cluster)
    except DataError as error:
        raise RunError(f"--test-data {test_data}: expected a held-out split the ServerApp can read: {error}") from None
    if test.input_shape != train.input_shape:
        raise RunError(
            f"--test-data {test_data}: expected images of {train.input_shape[1]}x{train.input_shape[2]}, as the "
            f"collaborators' data ({first.cluster}: {first.data_path}), got {test.input_shape[1]}x{test.input_shape[2]}"
        )


def run_federation(
    plan: LocalPlan,
    observer: Observer,
    settings: RunSettings = RunSettings(),
    test_data: Path | None = None,
) -> RunResult:
    """Run the planned federation to its end.

    Raises `AlreadyRunningError`, having written nothing, while another run of the job holds its lock.
    """
    with exclusive_run(plan.job_dir) as attempt:
        recorder = StatusRecorder(plan.job_dir / STATUS_FILE, plan.spec, (c.cluster for c in plan.collaborators))
        supervisor = ProcessSupervisor(attempt.logs, _environment(attempt, settings))
        run = _run_class(plan.job)(plan, attempt, settings, observer, recorder, supervisor, test_data)
        with _signals_raise():
            try:
                run.execute()
            except _InterruptedError as interrupt:
                recorder.failed(f"interrupted by {interrupt} before the run finished")
            except RunError as error:
                recorder.failed(str(error))
            except BaseException as error:
                recorder.failed(f"fleet run failed: {type(error).__name__}: {error}")
                raise
            finally:
                run.stop()
        return RunResult(recorder.status, attempt)


def _run_class(job: Job) -> type[LocalRun]:
    """The local run of the job's framework (`fleet.runtimes`)."""
    from fleet.runtimes import runtime_for

    return runtime_for(job.framework).local_run()


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into an exception, so that the processes are stopped in order."""
    if not _in_main_thread():
        yield
        return

    interrupted = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        # Only the first signal interrupts: a second Ctrl-C must not cut short the stopping of the processes.
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise _InterruptedError(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@dataclass
class LocalRun(ABC):
    """One local run of a job: what every runtime shares (the phase machine and the status, following the
    aggregator's progress, losing collaborators, the model card and publishing the storage). A runtime's subclass
    starts and watches its processes: Flower's `fleet.federation.flower_runtime.FlowerRun`, OpenFL's
    `fleet.federation.openfl_runtime.OpenFLRun` (`fleet.runtimes.Runtime.local_run`)."""

    plan: LocalPlan
    attempt: Attempt
    settings: RunSettings
    observer: Observer
    recorder: StatusRecorder
    supervisor: ProcessSupervisor
    test_data: Path | None
    finished: bool = False
    submitted: bool = False
    """The run started (submitted to its aggregator): the phase machine is told who is left."""
    supernodes: dict[str, ManagedProcess] = field(default_factory=dict)
    """cluster -> its collaborator's process (a SuperNode, an OpenFL collaborator)."""
    lost: dict[str, str] = field(default_factory=dict)
    tls_on: ClassVar[str]
    """What the model card says of the run's TLS."""
    serverapp_pid: int | None = None
    """The running aggregator's process, from its ``started`` event (Flower's ServerApp: when it dies, the run is
    resumed)."""

    @property
    def job(self) -> Job:
        return self.plan.job

    @abstractmethod
    def execute(self) -> None:
        """Start the federation and follow it to its end (`RunError` when it cannot run or fails)."""

    @abstractmethod
    def _check_processes(self) -> None:
        """Fail when the aggregator exited; lose the collaborators whose process exited."""

    @abstractmethod
    def _unregister(self, cluster: str) -> None:
        """Tell the aggregator that a lost collaborator is gone, so no round waits for it."""

    def _run_ended(self) -> str | None:
        """Why the runtime says the run ended while its progress shows no end; None while it goes on."""
        return None

    def _resume_if_aggregator_died(self, follower: ProgressFollower) -> bool:
        """Resume a run whose aggregator died where the runtime can; True when its events say it completed."""
        return False

    def _leave_out_late(self, late: list[str], what: str) -> None:
        """At the start timeout: stop and leave out the ``late`` collaborators when enough are in without them,
        else fail naming them, with the end of each one's log."""
        if len(self.supernodes) - len(late) >= self.job.min_available_clients:
            for cluster in late:
                self._lose(cluster, "did not connect in time", stop=True)
            return
        raise RunError(
            f"{what} of {', '.join(late)} did not connect within {self.settings.start_timeout:.0f} s"
            + "".join(f"\n--- {c} ({self.supernodes[c].log}):\n{self.supernodes[c].tail()}" for c in late)
        )

    # --- following the run --------------------------------------------------------------------------------

    def _timeout(self) -> float:
        training = self.job.training
        return self.settings.start_timeout + self.job.rounds * training.round_timeout_seconds + 60

    def _follow(self, deadline: float) -> None:
        follower = ProgressFollower(self.attempt.storage / PROGRESS_FILE)
        next_state_check = 0.0
        while True:
            if self._apply(follower.read()):
                return
            now = time.monotonic()
            if now >= next_state_check:
                next_state_check = now + 1.0
                self._check_processes()
                if self._resume_if_aggregator_died(follower):
                    return
                ended = self._run_ended()
                if ended is not None:
                    # The aggregator writes its last event before it ends: read once more before judging.
                    time.sleep(TICK)
                    if self._apply(follower.read()):
                        return
                    self.finished = True
                    raise RunError(f"{ended}{self._lost_note()}; see {self.attempt.logs}")
            if now > deadline:
                raise RunError(
                    f"the run did not finish within {self._timeout():.0f} s (start-up plus "
                    f"{self.job.rounds} rounds of roundTimeoutSeconds="
                    f"{self.job.training.round_timeout_seconds})"
                )
            time.sleep(TICK)

    def _apply(self, events: list[Event]) -> bool:
        """Record the ServerApp's events; True once the run completed (`RunError` when it failed)."""
        for event in events:
            if isinstance(event, Started):
                self.serverapp_pid = event.pid
            elif isinstance(event, RoundFinished):
                self.recorder.progress([event])
                self.observer.round(event)
            elif isinstance(event, Completed):
                self.finished = True
                self._complete(event)
                return True
            elif isinstance(event, Failed):
                self.finished = True
                raise RunError(f"the ServerApp failed: {event.reason}{self._lost_note()}")
        return False

    def _lose(self, cluster: str, reason: str, stop: bool = False) -> None:
        self.lost[cluster] = reason
        self.observer.warning(f"collaborator {cluster}: {reason}")
        process = self.supernodes.pop(cluster, None)
        if stop and process is not None:
            self.supervisor.stop(process)
        self._unregister(cluster)

    def _check_minimum(self) -> None:
        """Fail at once below the minimum (a lost local SuperNode does not come back); else record who is left."""
        remaining = len(self.plan.collaborators) - len(self.lost)
        if remaining < self.job.min_available_clients:
            raise RunError(
                f"only {remaining} of {len(self.plan.collaborators)} collaborators remain, job "
                f"{self.job.name!r} needs minAvailableClients={self.job.min_available_clients}"
                f"{self._lost_note()}"
            )
        if self.submitted:
            self.recorder.available(self.supernodes)

    def _lost_note(self) -> str:
        if not self.lost:
            return ""
        return " (lost: " + "; ".join(f"{c}: {r.splitlines()[0]}" for c, r in self.lost.items()) + ")"

    def _complete(self, event: Completed) -> None:
        staged = self.attempt.storage
        if not (staged / MODEL_FILE).is_file():
            raise RunError(f"the ServerApp reported completion but wrote no model at {staged / MODEL_FILE}")
        rounds = self.recorder.status.rounds
        participants = sorted({p for r in rounds for p in r.participants}) or sorted(self.supernodes)
        _write_model_card(staged, self.plan, participants, event.metrics, self.recorder.status, self.tls_on)
        # The bucket first: a refused upload fails the run with the local copy, too, as the last run left it.
        model_url = self._publish_to_s3(staged) if self.job.storage.s3 is not None else None
        try:
            publish(staged, self.plan.storage_dir, self.attempt)
        except OSError as error:
            raise RunError(
                f"the run completed, but its storage {staged} could not replace {self.plan.storage_dir}: {error}"
            ) from error
        self.recorder.progress([event], model_url or str(self.plan.storage_dir / MODEL_FILE))

    def _publish_to_s3(self, staged: Path) -> str:
        s3 = self.job.storage.s3
        assert s3 is not None
        location = S3Location.at(s3.bucket, s3.prefix, s3.region, s3.endpoint)
        self.observer.phase(f"publishing the run to {location.url(MANIFEST)}")
        try:
            published = publish_run(staged, location, self.attempt.path.name)
        except StorageError as error:
            raise RunError(f"the run completed, but its files were not published: {error}") from error
        for warning in published.warnings:
            self.observer.warning(warning)
        return published.model_url

    def stop(self) -> None:
        self.supervisor.stop_all()


def _environment(attempt: Attempt, settings: RunSettings) -> dict[str, str]:
    # Locally `fleet run` publishes to S3 itself, after the model card: the hub's bucket variables stay out.
    env = {name: value for name, value in os.environ.items() if not name.startswith("FLEET_S3_")}
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "FLWR_HOME": str(attempt.path / "flwr-home"),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(settings.task_poll_interval),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }
    )
    return env


def _data_problem(path: Path) -> str:
    if not path.exists():
        return "does not exist"
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        return "is not readable"
    if path.is_dir() and not any(path.iterdir()):
        return "is empty"
    return ""


def _git_commit(root: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def _privacy_summary(job: Job, metrics: Mapping[str, float]) -> str:
    """The model card's privacy line: what protected the updates, and the privacy the run spent."""
    dp, secure = job.privacy.differential_privacy, job.privacy.secure_aggregation
    parts = []
    if dp is not None:
        parts.append(
            f"differential privacy ({dp.side.value}-side {dp.clipping.value} clipping, clipping norm "
            f"{dp.clipping_norm:g}, noise multiplier {dp.noise_multiplier:g}): "
            + (
                f"epsilon {metrics['privacy_epsilon']:.4g} spent at delta {metrics['privacy_delta']:g} "
                f"(Flower's RDP accountant{f', budget {dp.epsilon:g}' if dp.epsilon is not None else ''})"
                if "privacy_epsilon" in metrics
                else "epsilon not accounted (Flower 1.41 accounts for fixed clipping only)"
            )
        )
    if secure is not None:
        parts.append(
            f"secure aggregation (SecAgg+, {secure.shares} shares, reconstruction threshold "
            f"{secure.reconstruction_threshold}): the aggregator received only masked updates and their sum"
        )
    return "; ".join(parts) or "none beyond TLS (no differential privacy, no secure aggregation)"


def _write_model_card(
    folder: Path,
    plan: LocalPlan,
    clusters: list[str],
    metrics: Mapping[str, float],
    status: FederatedLearningStatus,
    tls_on: str,
) -> None:
    job, training = plan.job, plan.job.training
    lines = [
        f"# Model card: {job.name}",
        "",
        f"- job: `{job.name}` (namespace `{job.namespace}`, dataset `{job.dataset}`)",
        f"- repository commit: `{_git_commit(plan.repository_root)}`",
        f"- clusters: {', '.join(clusters)}",
        f"- rounds: {job.rounds} (minAvailableClients {job.min_available_clients}, maxClients {job.max_clients})",
        f"- training: {training.strategy.value}, {training.local_epochs} local epochs, learning rate "
        f"{training.learning_rate}, batch size {training.batch_size}, fraction {training.fraction_train}"
        + (f", proximal mu {training.proximal_mu}" if training.proximal_mu else ""),
        f"- framework: {job.framework.value}",
        f"- TLS: {tls_on if job.tls else 'OFF'}",
        f"- privacy: {_privacy_summary(job, metrics)}",
        f"- trained: {status.started_at} to {status.finished_at or now()}",
        "- model: `model.pt`; per-round checkpoints: `checkpoints/`; metrics: `metrics.json`",
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items())],
        "",
        "## Rounds",
        "",
        "| round | participants | metrics |",
        "|---|---|---|",
        *[
            f"| {r.round} | {', '.join(r.participants)} | "
            + ", ".join(f"{k} {v:.4f}" for k, v in sorted(r.metrics.items()))
            + " |"
            for r in status.rounds
        ],
        "",
        "The data never left the clusters: each collaborator trained on its own partition and sent only "
        "model updates to the aggregator.",
    ]
    write_text_atomically(folder / MODEL_CARD, "\n".join(lines) + "\n")


__all__ = [
    "AlreadyRunningError",
    "Collaborator",
    "LocalPlan",
    "Observer",
    "RunError",
    "RunResult",
    "RunSettings",
    "check_test_data",
    "local_storage_dir",
    "plan_run",
    "run_config",
    "run_federation",
]
