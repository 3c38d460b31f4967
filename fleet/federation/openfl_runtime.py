"""Run a ``framework: openfl`` job on this machine as a real OpenFL 1.9 federation: one aggregator, one collaborator
per placed cluster, over OpenFL's mutual TLS with certificates from the run's hub CA.

What is OpenFL's here, and only here: its environment (``.venv-openfl``, `openfl_python`), its workspace (plan,
collaborator list, data paths, certificates in OpenFL's layout, the staged workspace code `fleet.app_openfl`), how
its processes start (``fx plan initialize``, ``fx aggregator start``, ``fx collaborator start`` through
`fleet.app_openfl.launcher`) and how a collaborator is seen to connect (the aggregator's log). What stays shared
with Flower (`fleet.federation.local`): the placement, the hub CA and the cluster identities (`certificates`), the
phase machine and the status file, the progress events the aggregator writes (`fleet.federation.progress`), the
checkpoints, model and model card, publishing the storage, and stopping everything.

The workspace, in the run's attempt folder (``openfl/``), so a run never finds another run's state (OpenFL
resumes from ``local_state/tensor.db`` when it finds one; the aggregator also refuses one):

    plan/plan.yaml   aggregator (fleet.app_openfl.aggregator.ProgressAggregator), tasks, network (TLS), cut-off
    plan/cols.yaml   the collaborators: each cluster's OCM add-on user, the common name of its certificate
    plan/data.yaml   <collaborator>,<the cluster's claimed data path, mapped locally>
    cert/cert_chain.crt, cert/server/agg_127.0.0.1.{crt,key}, cert/client/col_<collaborator>.{crt,key}
    fleet/           fleet.app and fleet.app_openfl, what the processes import (fleet itself needs Flower)

A collaborator whose certificate the aggregator refuses retries for ever: one that has not connected within the
start timeout is stopped and left out. A round waits at most ``roundTimeoutSeconds`` for a collaborator that
does not report (OpenFL's CutoffTimePolicy), then goes on with those that did if they meet minAvailableClients.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

import fleet
from fleet.app.files import write_text_atomically
from fleet.app_openfl.launcher import ALLOWED_KEYS_ENV, key_digest
from fleet.app_openfl.plan import (
    COLLABORATORS,
    CONNECTED,
    DATA,
    LEFT_OUT,
    PLAN,
    TRUSTED_CA,
    PlanSettings,
    client_certificate,
    collaborators_document,
    data_document,
    plan_document,
    server_certificate,
)
from fleet.federation.certificates import CertificateAuthority, ClusterIdentity, create_cluster_identity
from fleet.federation.local import LocalRun, RunError
from fleet.federation.processes import ManagedProcess, free_port
from fleet.hub import collaborator_user

OPENFL_VENV_ENV = "FLEET_OPENFL_VENV"
"""Where OpenFL's virtualenv is, when not `DEFAULT_OPENFL_VENV` beside fleet's sources."""
_SOURCES = Path(fleet.__file__).resolve().parent
DEFAULT_OPENFL_VENV = _SOURCES.parent / ".venv-openfl"
_AGGREGATOR_HOST = "127.0.0.1"
_LAUNCHER = ["-m", "fleet.app_openfl.launcher"]
_INITIALIZE_TIMEOUT = 300.0
_ALLOWED_KEYS = "certs/allowed-keys.json"
"""In the attempt folder: collaborator name -> the key digests the aggregator admits (`fleet.app_openfl.launcher`)."""
_TLS_ON = "on (hub CA, CA-signed cluster identities, OpenFL mutual TLS)"


def openfl_python() -> Path:
    """The Python of OpenFL's environment; `RunError` saying how to make it when it is missing."""
    venv = Path(os.environ.get(OPENFL_VENV_ENV) or DEFAULT_OPENFL_VENV)
    python = venv / "bin" / "python"
    if not python.exists():
        raise RunError(
            f"OpenFL's environment is missing ({python}): `make openfl-env` makes it from requirements/openfl.txt "
            f"(both README commands do), or set ${OPENFL_VENV_ENV} to a virtualenv holding that lock"
        )
    return python


def collaborator_name(cluster: str) -> str:
    """A cluster's OpenFL collaborator name: the common name of its certificate, OCM's add-on user."""
    return collaborator_user(cluster)


@dataclass
class OpenFLRun(LocalRun):
    """`fleet.federation.local`'s run of one job, with OpenFL's aggregator and collaborators."""

    tls_on: ClassVar[str] = _TLS_ON
    workspace: Path = field(default=Path())
    python: Path = field(default=Path())
    aggregator: ManagedProcess | None = None

    def execute(self) -> None:
        plan, job = self.plan, self.job
        # A job with privacy options does not load with framework: openfl (`fleet.models.Job`).
        for reason in plan.excluded.values():
            self.observer.warning(reason)
        self.python = openfl_python()
        self.attempt.storage.mkdir(parents=True)
        self.workspace = self.attempt.path / "openfl"
        if not job.tls:
            self.observer.warning(
                f"job {job.name!r} sets tls: false: the aggregator, the collaborators and every model update run "
                "WITHOUT TLS"
            )
        self.observer.phase("writing the OpenFL workspace (plan, collaborators, data paths, certificates)")
        port = free_port()
        self._write_workspace(port, self._identities())
        self.observer.phase("initialising the OpenFL plan (fx plan initialize)")
        self._initialize()
        self.observer.phase("starting the OpenFL aggregator")
        keys = {ALLOWED_KEYS_ENV: str(self.attempt.path / _ALLOWED_KEYS)} if job.tls else {}
        self.aggregator = self.supervisor.start("aggregator", self._fx("aggregator", "start"), self._env() | keys)
        self._wait_for_aggregator(port)
        self.recorder.federation_ready()
        self.observer.phase(f"starting {len(plan.collaborators)} OpenFL collaborators")
        for collaborator in plan.collaborators:
            name = collaborator_name(collaborator.cluster)
            argv = self._fx("collaborator", "start", "-n", name)
            self.supernodes[collaborator.cluster] = self.supervisor.start(
                f"collaborator-{collaborator.cluster}", argv, self._env()
            )
        self._wait_for_collaborators()
        decision = self.recorder.available(self.supernodes)
        if not any(type(action).__name__ == "SubmitRun" for action in decision.actions):
            raise RunError(f"the job cannot start: {self.recorder.status.message}")
        # OpenFL's aggregator holds the plan from its start: the rounds begin as the collaborators ask for tasks.
        self.recorder.submitted()
        self.submitted = True
        self.observer.started(job.rounds, tuple(self.supernodes))
        self._follow(time.monotonic() + self._timeout())

    # --- the workspace --------------------------------------------------------------------------------------

    def _identities(self) -> tuple[CertificateAuthority, dict[str, ClusterIdentity]] | None:
        if not self.job.tls:
            return None
        self.observer.phase("creating the hub CA, the aggregator certificate and one identity per cluster")
        directory = self.attempt.path / "certs"
        authority = CertificateAuthority.create(directory, f"fleet hub CA ({self.job.name})")
        identities = {
            c.cluster: create_cluster_identity(directory / "clusters", c.cluster, authority)
            for c in self.plan.collaborators
        }
        return authority, identities

    def _write_workspace(
        self, port: int, credentials: tuple[CertificateAuthority, dict[str, ClusterIdentity]] | None
    ) -> None:
        workspace = self.workspace
        for folder in ("plan", "save", "logs", "local_state"):
            (workspace / folder).mkdir(parents=True)
        stage_workspace_code(workspace)
        names = {c.cluster: collaborator_name(c.cluster) for c in self.plan.collaborators}
        _write_yaml(workspace / COLLABORATORS, collaborators_document(list(names.values())))
        paths = {names[c.cluster]: str(c.data_path) for c in self.plan.collaborators}
        (workspace / DATA).write_text(data_document(paths), encoding="utf-8")
        _write_yaml(workspace / PLAN, self._plan(port))
        if credentials is None:
            return
        authority, identities = credentials
        (workspace / "cert" / "server").mkdir(parents=True)
        (workspace / "cert" / "client").mkdir(parents=True)
        shutil.copyfile(authority.path, workspace / TRUSTED_CA)
        server = authority.issue_server(self.attempt.path / "certs", "aggregator")
        for source, target in zip((server.certificate, server.key), server_certificate(_AGGREGATOR_HOST), strict=True):
            _copy_private(source, workspace / target)
        for cluster, identity in identities.items():
            pair = client_certificate(names[cluster])
            for source, target in zip((identity.certificate, identity.key), pair, strict=True):
                _copy_private(source, workspace / target)
        # The key each collaborator must present, beyond its CA and common name (`fleet.app_openfl.launcher`).
        allowed = {names[c]: [key_digest(i.certificate.read_bytes())] for c, i in identities.items()}
        write_text_atomically(self.attempt.path / _ALLOWED_KEYS, json.dumps(allowed, indent=2) + "\n")

    def _plan(self, port: int) -> dict[str, object]:
        job, training = self.job, self.job.training
        return plan_document(
            PlanSettings(
                rounds=job.rounds,
                min_available_clients=job.min_available_clients,
                strategy=training.strategy.value,
                local_epochs=training.local_epochs,
                learning_rate=training.learning_rate,
                batch_size=training.batch_size,
                proximal_mu=training.proximal_mu,
                round_timeout_seconds=training.round_timeout_seconds,
                tls=job.tls,
                address=_AGGREGATOR_HOST,
                port=port,
                model_dir=str(self.attempt.storage),
                input_side=self._input_side(),
                test_data=str(self.test_data) if self.test_data else "",
                seed=self.settings.seed,
            )
        )

    def _input_side(self) -> int:
        """The image side of the collaborators' data (8 or 28): what the initial model is built for."""
        from fleet.app.data import DataError, load_dataset

        first = self.plan.collaborators[0]
        try:
            return load_dataset(first.data_path, cluster=first.cluster).input_shape[1]
        except DataError as error:
            raise RunError(str(error)) from None

    # --- the processes --------------------------------------------------------------------------------------

    def _fx(self, *arguments: str) -> list[str]:
        return [str(self.python), *_LAUNCHER, "--workspace", str(self.workspace), *arguments]

    def _env(self) -> dict[str, str]:
        # The workspace's staged code only: nothing of the main environment's site-packages.
        # COLUMNS: OpenFL logs through rich, which wraps at the terminal's width; one event stays on one line.
        return {
            "PYTHONPATH": str(self.workspace),
            "PYTHONNOUSERSITE": "1",
            "HOME": str(self.attempt.path),
            "COLUMNS": "1000",
        }

    def _initialize(self) -> None:
        """``fx plan initialize``: the initial model (``save/init.pbuf``) from the task runner."""
        log = self.attempt.logs / "plan-initialize.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.supervisor.env, **self._env()}
        with log.open("wb") as out:
            try:
                result = subprocess.run(
                    self._fx("plan", "initialize"),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=_INITIALIZE_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise RunError(
                    f"fx plan initialize did not finish within {_INITIALIZE_TIMEOUT:.0f} s; see {log}"
                ) from None
        if result.returncode != 0 or not (self.workspace / "save" / "init.pbuf").is_file():
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
            raise RunError(f"fx plan initialize failed (code {result.returncode}); {log} ends:\n{tail}")

    def _wait_for_aggregator(self, port: int) -> None:
        assert self.aggregator is not None
        deadline = time.monotonic() + self.settings.start_timeout
        while not _listening(port):
            if not self.aggregator.alive():
                raise RunError(
                    f"the OpenFL aggregator exited while starting; its log ({self.aggregator.log}) ends:\n"
                    f"{self.aggregator.tail()}"
                )
            if time.monotonic() > deadline:
                raise RunError(
                    f"the OpenFL aggregator did not listen on port {port} within {self.settings.start_timeout:.0f} s"
                )
            time.sleep(0.1)

    def _wait_for_collaborators(self) -> None:
        """Until every collaborator has asked the aggregator for work; the late ones (a refused certificate
        retries for ever) are stopped and left out at the start timeout."""
        self.observer.phase("waiting for the OpenFL collaborators to connect")
        deadline = time.monotonic() + self.settings.start_timeout
        while True:
            self._check_processes()
            connected = self._connected()
            late = [c for c in self.supernodes if c not in connected]
            if not late:
                return
            if time.monotonic() > deadline:
                self._leave_out_late(late, "OpenFL collaborators")  # a refused certificate retries for ever
                return
            time.sleep(0.2)

    def _connected(self) -> set[str]:
        """The clusters whose collaborator has asked the aggregator for work (`ProgressAggregator` lists them),
        which it can only after the TLS handshake and the aggregator's common-name check passed."""
        try:
            names = set(json.loads((self.workspace / CONNECTED).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return set()
        return {c for c in self.supernodes if collaborator_name(c) in names}

    def _check_processes(self) -> None:
        self.supervisor.watch()
        for process in self.supervisor.exited():
            if process.name == "aggregator" and not self.finished:
                raise RunError(
                    f"the OpenFL aggregator exited (code {process.popen.returncode}); its log ends:\n{process.tail()}"
                )
            cluster = process.name.removeprefix("collaborator-")
            if process.name.startswith("collaborator-") and cluster not in self.lost:
                detail = process.error() or "no error in its log"
                self._lose(cluster, f"its OpenFL collaborator exited (code {process.popen.returncode}): {detail}")
        self._check_minimum()

    def _unregister(self, cluster: str) -> None:
        """Tell the aggregator's round policy that a lost collaborator will not report (`LeftOutPolicy`)."""
        left_out = sorted(collaborator_name(c) for c in self.lost)
        write_text_atomically(self.workspace / LEFT_OUT, json.dumps(left_out) + "\n")

    def _run_ended(self) -> str | None:
        return None  # the aggregator's progress says when it ends; it exiting early is a process check


def stage_workspace_code(workspace: Path) -> None:
    """What the OpenFL processes import: `fleet.app` (model, training, data), `fleet.app_openfl`, `fleet.hub`."""
    sources = [
        _SOURCES / "__init__.py",
        _SOURCES / "hub.py",
        *sorted((_SOURCES / "app").glob("*.py")),
        *sorted((_SOURCES / "app_openfl").glob("*.py")),
    ]
    for source in sources:
        target = workspace / "fleet" / source.relative_to(_SOURCES)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _write_yaml(path: Path, document: object) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def _copy_private(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    target.chmod(0o600)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((_AGGREGATOR_HOST, port)) == 0


__all__ = ["DEFAULT_OPENFL_VENV", "OPENFL_VENV_ENV", "OpenFLRun", "collaborator_name", "openfl_python"]
