"""Run a job on this machine as a real Flower federation: one SuperLink, one SuperNode per placed cluster.

`plan_run` places the job with the same evaluator as ``fleet plan`` and maps each selected cluster's claimed
data path under the local data root. `run_federation` then
- makes the credentials (hub CA, SuperLink certificate, a CA-signed identity per cluster; `certificates`),
- starts ``flower-superlink`` with TLS and SuperNode authentication, registers each cluster's key once its
  certificate checks out against the hub CA, and starts one ``flower-supernode`` per cluster,
- submits the FAB (`fleet/app/pyproject.toml` + the ``fleet`` sources) with the job's run config, as
  ``flwr run`` does,
- follows the ServerApp's ``progress.jsonl`` and the run's state, writes the status file and the model card,
- and stops every process it started, whatever happens (`processes.ProcessSupervisor`).

One run of a job at a time: the run holds the job's lock, writes everything into an attempt folder of its own
and publishes the model storage only when it completed (`workspace`).

Speed (Flower 1.41 on 2 cores): by default the SuperLink and each SuperNode run with ``--isolation process``
and one warm executor (`executor`) forks the ServerApp and every ClientApp from a process that has imported
Flower, torch and the app once, so no message pays for a new Python, Flower and torch. What is left is the
SuperNode's fixed 3 s wait between polls of the SuperLink when it is idle. ``executor="flower"`` keeps
Flower's own SuperExec, which starts a new ``flwr-serverapp`` and a new ``flwr-clientapp`` per message; its
task poll then runs every 0.05 s instead of 1 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import ClassVar, Literal, Protocol

from fleet.app.files import write_text_atomically
from fleet.app.resume import resume_point, resume_run_config
from fleet.app.storage import MANIFEST, S3Location, StorageError, publish_run
from fleet.data import mapped_path
from fleet.federation.bundle import components, stage_app
from fleet.federation.certificates import (
    CertificateAuthority,
    CertificateRejectedError,
    ClusterIdentity,
    create_cluster_identity,
    verified_auth_public_key,
)
from fleet.federation.control import ControlClient
from fleet.federation.flower_launcher import (
    ALLOWED_CLIENTS,
    CLIENT_CA,
    CLIENT_CERT,
    CLIENT_KEY,
    client_ssl_context,
    write_allowed_clients,
)
from fleet.federation.processes import ManagedProcess, ProcessSupervisor, free_port
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
from fleet.hub import OPERATOR_USER, collaborator_user
from fleet.lifecycle import SubmitRun
from fleet.models import FederatedLearningSpec, FederatedLearningStatus, Job, Phase
from fleet.placement import placement_spec
from fleet.plan import exclusion_reasons
from fleet.repository import Repository

Executor = Literal["warm", "flower"]
_LAUNCHER = [sys.executable, "-m", "fleet.federation.flower_launcher"]
"""Flower's SuperLink and SuperNode, started with mutual TLS (`flower_launcher`)."""
_START_TIMEOUT = 90.0
_TICK = 0.2
_MAX_RESUMES = 3
"""How often one `fleet run` resumes a run whose aggregator died before it gives up."""
MODEL_CARD = "model-card.md"
MODEL_FILE = "model.pt"
_TLS_ON = "on (hub CA, CA-signed cluster identities, SuperNode authentication)"


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
class LocalRun:
    """One local run of a job: what every runtime shares (the phase machine, the status, following the
    aggregator's progress, losing collaborators, the model card and publishing), with Flower's processes (a
    SuperLink, one SuperNode per cluster, the warm executor). Another runtime overrides how its processes start
    and are watched (`fleet.federation.openfl_runtime.OpenFLRun`)."""

    plan: LocalPlan
    attempt: Attempt
    settings: RunSettings
    observer: Observer
    recorder: StatusRecorder
    supervisor: ProcessSupervisor
    test_data: Path | None
    control: ControlClient | None = None
    run_id: int | None = None
    finished: bool = False
    supernodes: dict[str, ManagedProcess] = field(default_factory=dict)
    node_ids: dict[str, int] = field(default_factory=dict)
    """cluster -> its SuperNode's node id at the SuperLink (registered keys; none with ``tls: false``)."""
    lost: dict[str, str] = field(default_factory=dict)
    tls_on: ClassVar[str] = _TLS_ON
    """What the model card says of the run's TLS."""
    serverapp_pid: int | None = None
    """The running ServerApp's process, from its ``started`` event: when it dies, the run is resumed."""
    resumes: int = 0
    executor_arguments: tuple[str, Mapping[str, int], _Tls | None] | None = None

    @property
    def job(self) -> Job:
        return self.plan.job

    def execute(self) -> None:
        plan, job = self.plan, self.job
        for reason in plan.excluded.values():
            self.observer.warning(reason)
        self.attempt.storage.mkdir(parents=True)
        tls = self._credentials()
        if tls is None:
            self.observer.warning(
                f"job {job.name!r} sets tls: false: the SuperLink, the SuperNodes and every model update run "
                "WITHOUT TLS and WITHOUT SuperNode authentication"
            )
        # Start what does not depend on the SuperLink (the executor's imports) while the SuperLink starts.
        ports = {c.cluster: free_port() for c in plan.collaborators}
        address = self._start_superlink(tls)
        self.executor_arguments = (address, ports, tls)
        self._start_executor(address, ports, tls)
        self._wait_for_superlink(address, tls)
        self.recorder.federation_ready()
        self.control = ControlClient(address, tls.ca if tls else None, tls.operator if tls else None)
        self.node_ids = self._register(tls)
        self._start_supernodes(address, ports, tls)
        # Submit once every SuperNode is in: the ServerApp starts as soon as minAvailableClients are, and the
        # first round would go without the late ones.
        self._wait_for_nodes(self.node_ids)
        # The phase machine decides, as on the hub: Running, and a run to submit, once the minimum is in.
        decision = self.recorder.available(self.supernodes)
        if not any(isinstance(action, SubmitRun) for action in decision.actions):
            raise RunError(f"the job cannot start: {self.recorder.status.message}")
        self.run_id = self._submit()
        self.recorder.submitted()
        self.observer.started(job.rounds, tuple(self.supernodes))
        self._follow(time.monotonic() + self._timeout())

    # --- set-up -------------------------------------------------------------------------------------------

    def _credentials(self) -> _Tls | None:
        if not self.job.tls:
            return None
        self.observer.phase("creating the hub CA, the SuperLink certificate and one identity per cluster")
        directory = self.attempt.path / "certs"
        authority = CertificateAuthority.create(directory, f"fleet hub CA ({self.job.name})")
        server = authority.issue_server(directory)
        identities = {
            c.cluster: create_cluster_identity(directory / "clusters", c.cluster, authority)
            for c in self.plan.collaborators
        }
        operator = authority.issue_operator(directory)
        # Who the SuperLink lets in: the operator (this process, the ServerApp) and the placed clusters' add-on
        # users; a certificate of the same CA for any other name is closed at the handshake.
        allowed = directory / "allowed-clients.json"
        write_allowed_clients(allowed, [OPERATOR_USER], {collaborator_user(c): c for c in identities})
        # Flower's own SuperExec starts flwr-serverapp processes this module cannot make present a certificate.
        mutual = self.settings.executor == "warm"
        if not mutual:
            self.observer.warning(
                "--executor flower: Flower's SuperExec cannot present client certificates, so the SuperLink "
                "runs with TLS and SuperNode authentication but WITHOUT mutual TLS"
            )
        operator_pair = (operator.certificate, operator.key)
        return _Tls(authority.path, server.certificate, server.key, identities, operator_pair, allowed, mutual)

    def _start_superlink(self, tls: _Tls | None) -> str:
        self.observer.phase("starting the SuperLink")
        port = free_port()
        # With TLS, through fleet's launcher: Flower's SuperLink, requiring client certificates (mutual TLS).
        argv = [*_LAUNCHER, "superlink"] if tls and tls.mutual else [_tool("flower-superlink")]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        argv += ["--disable-runtime-dependency-installation"]
        # Runs, nodes and their keys in a file (Flower's SQLite state), not only in the process's memory.
        argv += ["--database", str(self.attempt.path / "superlink.db")]
        if self.settings.executor == "warm":
            argv += ["--isolation", "process"]
        if tls:
            argv += ["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.server_certificate)]
            argv += ["--ssl-keyfile", str(tls.server_key), "--enable-supernode-auth"]
        else:
            argv += ["--insecure"]
        extra_env = {CLIENT_CA: str(tls.ca), ALLOWED_CLIENTS: str(tls.allowed_clients)} if tls and tls.mutual else {}
        self.supervisor.start("superlink", argv, extra_env)
        return f"127.0.0.1:{port}"

    def _wait_for_superlink(self, address: str, tls: _Tls | None) -> None:
        superlink = self.supervisor.processes[0]
        deadline = time.monotonic() + self.settings.start_timeout
        while not _healthy(address, tls):
            if not superlink.alive():
                raise RunError(
                    f"the SuperLink exited while starting; its log ({superlink.log}) ends:\n{superlink.tail()}"
                )
            if time.monotonic() > deadline:
                raise RunError(f"the SuperLink did not answer on {address} within {self.settings.start_timeout:.0f} s")
            time.sleep(0.1)

    def _register(self, tls: _Tls | None) -> dict[str, int]:
        """Register each cluster's key with the SuperLink, as the hub does; cluster -> node id."""
        if tls is None:
            return {}
        assert self.control is not None
        self.observer.phase("registering the clusters' SuperNode keys with the SuperLink")
        node_ids = {}
        for cluster, identity in tls.identities.items():
            try:
                key = verified_auth_public_key(identity, tls.ca)
            except CertificateRejectedError as error:
                self._lose(cluster, f"refused: {error}")
                continue
            node_ids[cluster] = self.control.register_node(key, cluster)
        self._check_minimum()
        return node_ids

    def _start_supernodes(self, address: str, ports: Mapping[str, int], tls: _Tls | None) -> None:
        self.observer.phase(f"starting {len(self.plan.collaborators)} SuperNodes")
        for collaborator in self.plan.collaborators:
            cluster = collaborator.cluster
            if cluster in self.lost:
                continue
            # With TLS, through fleet's launcher: Flower's SuperNode, presenting the cluster's certificate.
            argv = [*_LAUNCHER, "supernode"] if tls and tls.mutual else [_tool("flower-supernode")]
            argv += ["--superlink", address, "--host", "127.0.0.1"]
            argv += ["--port", str(ports[cluster])]
            node_config = f"data-path={_toml_string(str(collaborator.data_path))} cluster-name={_toml_string(cluster)}"
            argv += ["--node-config", node_config]
            if tls:
                identity = tls.identities[cluster]
                argv += ["--root-certificates", str(identity.trusted_ca)]
                argv += ["--auth-supernode-private-key", str(identity.auth_key)]
                # The cluster's certificate also serves the SuperNode's Runtime API to its ClientApps.
                argv += ["--ssl-certfile", str(identity.certificate), "--ssl-keyfile", str(identity.key)]
                argv += ["--ssl-ca-certfile", str(identity.trusted_ca)]
            else:
                argv += ["--insecure"]
            if self.settings.executor == "warm":
                argv += ["--isolation", "process"]
            presents = {CLIENT_CERT: str(identity.certificate), CLIENT_KEY: str(identity.key)} if tls else {}
            self.supernodes[cluster] = self.supervisor.start(f"supernode-{cluster}", argv, presents)

    def _start_executor(self, address: str, ports: Mapping[str, int], tls: _Tls | None) -> None:
        """The warm executor of the ServerApp task and of every SuperNode's ClientApp tasks (``warm``)."""
        if self.settings.executor != "warm":
            return
        argv = [sys.executable, "-m", "fleet.federation.executor", "--parent-pid", str(os.getpid())]
        argv += ["--serve", f"flwr-serverapp={address}"]
        for port in ports.values():
            argv += ["--serve", f"flwr-clientapp=127.0.0.1:{port}"]
        if tls:
            argv += ["--root-certificates", str(tls.ca)]
        app = self._app_dir()
        argv += ["--app-dir", str(app)]
        for reference in components(app).values():
            argv += ["--preload", reference.partition(":")[0]]
        # The ServerApp (and the executor's task polls) connect to the SuperLink as the operator.
        presents = {CLIENT_CERT: str(tls.operator[0]), CLIENT_KEY: str(tls.operator[1])} if tls else {}
        self.supervisor.start("executor", argv, presents)

    def _wait_for_nodes(self, node_ids: dict[str, int]) -> None:
        assert self.control is not None
        self.observer.phase("waiting for the SuperNodes to connect")
        deadline = time.monotonic() + self.settings.start_timeout
        while True:
            self._check_processes()
            if self.recorder.tick().status.phase is Phase.FAILED:
                raise RunError(self.recorder.status.message)
            online = {n for n, state in self.control.node_statuses().items() if state == "online"}
            expected = {node_ids[c] for c in self.supernodes if c in node_ids}
            if (expected and expected <= online) or (not node_ids and len(online) >= len(self.supernodes)):
                return
            if time.monotonic() > deadline:
                if not node_ids:  # tls: false, no keys registered: the SuperLink's nodes carry no cluster names
                    if len(online) >= self.job.min_available_clients:
                        self.observer.warning(f"{len(online)} of {len(self.supernodes)} SuperNodes connected in time")
                        return
                    late = list(self.supernodes)
                else:
                    late = [c for c in self.supernodes if node_ids.get(c) not in online]
                    if len(self.supernodes) - len(late) >= self.job.min_available_clients:
                        for cluster in late:
                            self._lose(cluster, "did not connect in time", stop=True)
                        return
                raise RunError(
                    f"SuperNodes of {', '.join(late)} did not connect within "
                    f"{self.settings.start_timeout:.0f} s"
                    + "".join(f"\n--- {c} ({self.supernodes[c].log}):\n{self.supernodes[c].tail()}" for c in late)
                )
            time.sleep(0.1)

    def _app_dir(self) -> Path:
        """The FAB's sources (`fleet.federation.bundle.stage_app`), staged once per job."""
        app = self.attempt.path / "app"
        if not (app / "pyproject.toml").is_file():
            staging = self.attempt.path / ".app.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            stage_app(staging, self.settings.app)
            shutil.rmtree(app, ignore_errors=True)
            staging.rename(app)
        return app

    def _submit(self, resume: Mapping[str, str | int] | None = None) -> int:
        """Submit the FAB with the job's run config (what ``flwr run`` sends); the run id."""
        assert self.control is not None
        self.observer.phase("submitting the run")
        job = self.plan.job
        config = run_config(
            job.rounds,
            job.min_available_clients,
            job.training,
            str(self.attempt.storage),
            str(self.test_data) if self.test_data else "",
            self.settings.seed,
            privacy=job.privacy,
            population=job.max_clients,
        )
        try:
            return self.control.start_run(self._app_dir(), {**config, **(resume or {})})
        except Exception as error:
            raise RunError(f"the SuperLink did not start the run: {type(error).__name__}: {error}") from error

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
                    time.sleep(_TICK)
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
            time.sleep(_TICK)

    def _run_ended(self) -> str | None:
        """Why the runtime says the run ended while its progress shows no end; None while it goes on."""
        assert self.control is not None and self.run_id is not None
        state = self.control.run_state(self.run_id)
        if state is None or state.status != "finished":
            return None
        return f"the run ended ({state.sub_status}) without completing: {state.details or 'no details'}"

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

    def _resume_if_aggregator_died(self, follower: ProgressFollower) -> bool:
        """When the ServerApp died without a last word (killed), submit the run again from its last round
        checkpoint (`fleet.app.resume`); True when its events turn out to say it completed after all."""
        pid = self.serverapp_pid
        if pid is None or _alive(pid):
            return False
        # The ServerApp writes its last event before it ends: unread events decide first.
        time.sleep(_TICK)
        if self._apply(follower.read()):
            return True
        if self.resumes >= _MAX_RESUMES:
            raise RunError(f"the aggregator (ServerApp pid {pid}) died again, after {self.resumes} resumes")
        assert self.control is not None and self.run_id is not None
        with contextlib.suppress(Exception):
            self.control.stop_run(self.run_id)  # Flower would fail it only after its 60 s heartbeat lapses
        point = resume_point(self.attempt.storage)
        where = (
            f"round {point.first_round} from the checkpoint of round {point.last_round} ({point.checkpoint})"
            if point
            else "round 1 (no round had completed)"
        )
        self.observer.warning(f"the aggregator died (ServerApp pid {pid} is gone); resuming the run at {where}")
        self.resumes += 1
        self.serverapp_pid = None
        # Flower's SuperLink gives a run's ServerApp task out once: a new run, to a new executor.
        self._restart_executor()
        self.run_id = self._submit(resume_run_config(point))
        return False

    def _restart_executor(self) -> None:
        old = next(p for p in self.supervisor.processes if p.name == "executor")
        self.supervisor.stop(old)
        self.supervisor.processes.remove(old)
        assert self.executor_arguments is not None
        self._start_executor(*self.executor_arguments)

    def _check_processes(self) -> None:
        self.supervisor.watch()
        for process in self.supervisor.exited():
            if process.name == "superlink" and not self.finished:
                raise RunError(
                    f"the SuperLink exited (code {process.popen.returncode}); its log ends:\n{process.tail()}"
                )
            if process.name == "executor" and not self.finished:
                raise RunError(f"the ClientApp executor exited; its log ends:\n{process.tail()}")
            cluster = process.name.removeprefix("supernode-")
            if process.name.startswith("supernode-") and cluster not in self.lost:
                detail = process.error() or "no error in its log"
                self._lose(cluster, f"its SuperNode exited (code {process.popen.returncode}): {detail}")
        self._check_minimum()

    def _lose(self, cluster: str, reason: str, stop: bool = False) -> None:
        self.lost[cluster] = reason
        self.observer.warning(f"collaborator {cluster}: {reason}")
        process = self.supernodes.pop(cluster, None)
        if stop and process is not None:
            self.supervisor.stop(process)
        self._unregister(cluster)

    def _unregister(self, cluster: str) -> None:
        """Tell the SuperLink that a lost collaborator is gone, so no round waits for it.

        Otherwise the SuperLink holds the node online until its heartbeat lapses (about 50 s with Flower 1.41's
        defaults) and the ServerApp waits that long for the node's reply. Unregistered, the node is unavailable
        at once: the SuperLink answers the ServerApp's pending messages to it with a NODE_UNAVAILABLE error and
        leaves it out of the next rounds. Best effort: a SuperLink that does not answer changes nothing else.
        """
        node_id = self.node_ids.pop(cluster, None)
        if node_id is None or self.control is None:
            return
        with contextlib.suppress(Exception):
            self.control.unregister_node(node_id)

    def _check_minimum(self) -> None:
        """Fail at once below the minimum (a lost local SuperNode does not come back); else record who is left."""
        remaining = len(self.plan.collaborators) - len(self.lost)
        if remaining < self.job.min_available_clients:
            raise RunError(
                f"only {remaining} of {len(self.plan.collaborators)} collaborators remain, job "
                f"{self.job.name!r} needs minAvailableClients={self.job.min_available_clients}"
                f"{self._lost_note()}"
            )
        if self.run_id is not None:
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
        if self.control is not None:
            if self.run_id is not None and not self.finished:
                with contextlib.suppress(Exception):
                    self.control.stop_run(self.run_id)
            with contextlib.suppress(Exception):
                self.control.close()
        self.supervisor.stop_all()


@dataclass(frozen=True)
class _Tls:
    ca: Path
    server_certificate: Path
    server_key: Path
    identities: dict[str, ClusterIdentity]
    operator: tuple[Path, Path]
    """The operator's client certificate and key: this process's Control API calls, the ServerApp's connection."""
    allowed_clients: Path
    """The SuperLink's allow-list of client certificates (`flower_launcher.write_allowed_clients`)."""
    mutual: bool
    """Whether the SuperLink requires client certificates (started through `flower_launcher`)."""


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


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (the executor reaps its ended ServerApp at once)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tool(name: str) -> str:
    """A Flower command from this Python's environment."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _healthy(address: str, tls: _Tls | None) -> bool:
    scheme = "https" if tls else "http"
    context = client_ssl_context(str(tls.ca), *tls.operator) if tls else None
    try:
        with urllib.request.urlopen(f"{scheme}://{address}/health", timeout=1, context=context) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _data_problem(path: Path) -> str:
    if not path.exists():
        return "does not exist"
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        return "is not readable"
    if path.is_dir() and not any(path.iterdir()):
        return "is empty"
    return ""


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


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
    tls_on: str = _TLS_ON,
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
