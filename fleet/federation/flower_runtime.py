"""Flower's local run: one SuperLink, one SuperNode per placed cluster, and fleet's warm executor.

`FlowerRun.execute`
- makes the credentials (hub CA, SuperLink certificate, a CA-signed identity per cluster; `certificates`),
- starts ``flower-superlink`` with TLS and SuperNode authentication, registers each cluster's key once its
  certificate checks out against the hub CA, and starts one ``flower-supernode`` per cluster,
- submits the FAB (`fleet/app/pyproject.toml` + the ``fleet`` sources) with the job's run config, as
  ``flwr run`` does,
- and follows the ServerApp's ``progress.jsonl`` and the run's state (`fleet.federation.local.LocalRun`), resuming
  a run whose ServerApp died from its last checkpoint.

Speed (Flower 1.41 on 2 cores): by default the SuperLink and each SuperNode run with ``--isolation process``
and one warm executor (`executor`) forks the ServerApp and every ClientApp from a process that has imported
Flower, torch and the app once, so no message pays for a new Python, Flower and torch. ``executor="flower"``
keeps Flower's own SuperExec, which starts a new ``flwr-serverapp`` and a new ``flwr-clientapp`` per message;
its task poll then runs every 0.05 s instead of 1 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from fleet.app.resume import resume_point, resume_run_config
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
from fleet.federation.local import TICK, LocalRun, RunError
from fleet.federation.processes import free_port, pid_alive
from fleet.federation.progress import ProgressFollower
from fleet.federation.run_config import run_config
from fleet.hub import OPERATOR_USER, collaborator_user
from fleet.lifecycle import SubmitRun
from fleet.models import Phase

_LAUNCHER = [sys.executable, "-m", "fleet.federation.flower_launcher"]
"""Flower's SuperLink and SuperNode, started with mutual TLS (`flower_launcher`)."""
_MAX_RESUMES = 3
"""How often one `fleet run` resumes a run whose aggregator died before it gives up."""
_TLS_ON = "on (hub CA, CA-signed cluster identities, SuperNode authentication)"


@dataclass
class FlowerRun(LocalRun):
    tls_on: ClassVar[str] = _TLS_ON
    control: ControlClient | None = None
    run_id: int | None = None
    node_ids: dict[str, int] = field(default_factory=dict)
    """cluster -> its SuperNode's node id at the SuperLink (registered keys; none with ``tls: false``)."""
    resumes: int = 0
    executor_arguments: tuple[str, Mapping[str, int], _Tls | None] | None = None

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
        self.submitted = True
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
                    late = list(self.supernodes)  # which ones are in is unknown: too few, so the run fails
                else:
                    late = [c for c in self.supernodes if node_ids.get(c) not in online]
                self._leave_out_late(late, "SuperNodes")
                return
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

    def _run_ended(self) -> str | None:
        """Why the runtime says the run ended while its progress shows no end; None while it goes on."""
        assert self.control is not None and self.run_id is not None
        state = self.control.run_state(self.run_id)
        if state is None or state.status != "finished":
            return None
        return f"the run ended ({state.sub_status}) without completing: {state.details or 'no details'}"

    def _resume_if_aggregator_died(self, follower: ProgressFollower) -> bool:
        """When the ServerApp died without a last word (killed), submit the run again from its last round
        checkpoint (`fleet.app.resume`); True when its events turn out to say it completed after all."""
        pid = self.serverapp_pid
        if pid is None or pid_alive(pid):
            return False
        # The ServerApp writes its last event before it ends: unread events decide first.
        time.sleep(TICK)
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


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string

    return True
