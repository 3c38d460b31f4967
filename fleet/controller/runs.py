"""Submitting a job's run to its SuperLink, asking how it went, and managing the collaborators' SuperNode keys.

`FlowerRunBackend` does what ``flwr run`` does (the FAB built from the ``fleet`` package's sources and
fleet/app/pyproject.toml, as ``fleet run`` does) against the job's in-hub SuperLink Service, over mutual TLS: it
verifies the SuperLink with the hub CA and presents the controller's operator certificate
(`fleet.controller.hub.load_or_create_operator`), which a SuperLink started through fleet's launcher requires of
every client. The run's state, stopping it and the SuperNode keys go through `fleet.federation.control`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from fleet.federation.run_config import run_config as federation_run_config
from fleet.models import FederatedLearningSpec

from .hub import Credentials
from .objects import JobRef, internal_address

if TYPE_CHECKING:
    from fleet.federation.control import ControlClient


class RunSubmissionError(Exception):
    """The run could not be submitted; the message says why."""


class KeyRetiredError(Exception):
    """The SuperLink unregistered this key before (the cluster left the job): Flower never registers a key
    twice, so the cluster can come back only with a renewed certificate."""


class RunBackend(Protocol):
    """How the controller starts, follows and stops a job's run (`fleet.runtimes.Runtime.run_backend`)."""

    def submit(
        self,
        job: JobRef,
        spec: FederatedLearningSpec,
        model_dir: str,
        credentials: Credentials | None,
        resume: Mapping[str, str | int] | None = None,
    ) -> int:
        """Submit the job's run (``resume``: where a lost run left off, `fleet.app.resume`); its run id. Raises
        `RunSubmissionError`."""
        ...

    def failure(self, job: JobRef, run_id: int, credentials: Credentials | None) -> str | None:
        """Why the run ended without completing, or None while it runs or once it completed."""
        ...

    def stop(self, job: JobRef, run_id: int, credentials: Credentials | None) -> None: ...


@runtime_checkable
class KeyRegistry(Protocol):
    """Where the collaborators' keys are registered with a job's aggregator (Flower's SuperNode authentication)."""

    def register(self, job: JobRef, cluster: str, public_key: bytes, credentials: Credentials) -> int:
        """Register a collaborator's SuperNode authentication key (OpenSSH) with the job's SuperLink; the node
        id (the existing one when the key is registered already). Raises `KeyRetiredError`."""
        ...

    def unregister(self, job: JobRef, node_id: int, credentials: Credentials) -> None:
        """Remove a SuperNode: its key is refused from then on, and no round waits for it."""
        ...


def run_config(spec: FederatedLearningSpec, model_dir: str) -> dict[str, str | int | float]:
    """The ServerApp's run config for a job on the hub (no held-out split there: collaborators evaluate)."""
    return federation_run_config(
        spec.server.rounds,
        spec.server.min_available_clients,
        spec.training,
        model_dir,
        privacy=spec.privacy,
        population=spec.max_clients,
    )


@dataclass
class FlowerRunBackend:
    address_of: Callable[[JobRef], str] = internal_address
    """Where a job's SuperLink answers the controller (its in-hub Service)."""
    app: Path | None = None
    """A Flower app folder to submit instead of fleet's own (staged from the installed package)."""

    def submit(
        self,
        job: JobRef,
        spec: FederatedLearningSpec,
        model_dir: str,
        credentials: Credentials | None,
        resume: Mapping[str, str | int] | None = None,
    ) -> int:
        """Start the job's run on its SuperLink as `fleet run` does: the same FAB, the same run config."""
        from fleet.federation.bundle import stage_app

        address = self.address_of(job)
        with tempfile.TemporaryDirectory(prefix="fleet-submit-") as folder:
            root = Path(folder)
            app = stage_app(root / "app", self.app)
            try:
                with _control(address, root, credentials) as client:
                    return client.start_run(app, {**run_config(spec, model_dir), **(resume or {})})
            except Exception as error:  # gRPC and Flower raise many kinds; each means "not started"
                raise RunSubmissionError(f"the SuperLink at {address} did not start the run: {error}") from error

    def failure(self, job: JobRef, run_id: int, credentials: Credentials | None) -> str | None:
        with (
            tempfile.TemporaryDirectory(prefix="fleet-state-") as folder,
            _control(self.address_of(job), Path(folder), credentials) as client,
        ):
            state = client.run_state(run_id)
        if state is None:
            return f"the SuperLink no longer knows run {run_id} (was it restarted without its database?)"
        if state.status == "finished" and state.sub_status != "completed":
            return f"run {run_id} ended {state.sub_status}: {state.details or 'no details'}"
        return None

    def stop(self, job: JobRef, run_id: int, credentials: Credentials | None) -> None:
        with (
            tempfile.TemporaryDirectory(prefix="fleet-stop-") as folder,
            _control(self.address_of(job), Path(folder), credentials) as client,
        ):
            client.stop_run(run_id)

    def register(self, job: JobRef, cluster: str, public_key: bytes, credentials: Credentials) -> int:
        from cryptography.hazmat.primitives import serialization

        spki = serialization.load_ssh_public_key(public_key).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with (
            tempfile.TemporaryDirectory(prefix="fleet-register-") as folder,
            _control(self.address_of(job), Path(folder), credentials) as client,
        ):
            # Known already (registered before a controller restart whose record was not written yet)?
            known = client.node_ids_by_key().get(spki)
            if known is not None:
                node_id, status = known
                if status == "unregistered":
                    raise KeyRetiredError(
                        f"cluster {cluster}'s key was unregistered from this job's SuperLink (node {node_id})"
                    )
                return node_id
            return client.register_node(public_key, cluster)

    def unregister(self, job: JobRef, node_id: int, credentials: Credentials) -> None:
        with (
            tempfile.TemporaryDirectory(prefix="fleet-unregister-") as folder,
            _control(self.address_of(job), Path(folder), credentials) as client,
        ):
            client.unregister_node(node_id)


@contextmanager
def _control(address: str, folder: Path, credentials: Credentials | None) -> Iterator[ControlClient]:
    """A Control API client of ``address``: over mutual TLS with ``credentials``, in plain HTTP without."""
    from fleet.federation.control import ControlClient

    if credentials is None:
        with ControlClient(address, None) as client:
            yield client
        return
    files = {"ca.pem": credentials.ca, "operator.pem": credentials.certificate, "operator.key": credentials.key}
    for name, text in files.items():
        path = folder / name
        path.touch(mode=0o600)
        path.write_text(text, encoding="utf-8")
    with ControlClient(address, folder / "ca.pem", (folder / "operator.pem", folder / "operator.key")) as client:
        yield client
