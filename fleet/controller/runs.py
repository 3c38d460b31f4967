"""Submitting a job's run to its SuperLink, and asking how it went.

`FlowerRunBackend` does what ``flwr run`` does (it runs it: the ``flwr`` CLI builds the FAB from the ``fleet``
package's sources and fleet/app/pyproject.toml, as ``fleet run`` does) against the job's in-hub SuperLink
Service, over TLS with the hub CA; the run's state and stopping go through `fleet.federation.control`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fleet.federation.run_config import run_config as federation_run_config
from fleet.models import FederatedLearningSpec

from .objects import JobRef, internal_address


class RunSubmissionError(Exception):
    """The run could not be submitted; the message says why."""


class CollaboratorRejectedError(Exception):
    """A collaborator certificate the hub does not vouch for (another CA, another cluster, expired, not EC)."""


class RunBackend(Protocol):
    def submit(self, job: JobRef, spec: FederatedLearningSpec, model_dir: str, ca_pem: str | None) -> int:
        """Submit the job's run; its run id. Raises `RunSubmissionError`."""
        ...

    def failure(self, job: JobRef, run_id: int, ca_pem: str | None) -> str | None:
        """Why the run ended without completing, or None while it runs or once it completed."""
        ...

    def stop(self, job: JobRef, run_id: int, ca_pem: str | None) -> None: ...

    def register(self, job: JobRef, cluster: str, public_key: bytes, ca_pem: str) -> None:
        """Register a collaborator's SuperNode authentication key (OpenSSH) with the job's SuperLink."""
        ...


def collaborator_public_key(certificate_pem: str, ca_pem: str, cluster: str) -> bytes:
    """The OpenSSH public key of ``cluster``'s add-on registration certificate, once it checks out: signed by the
    hub CA, valid now, naming the cluster (OCM's subject organisation for the add-on), an EC key (Flower's
    SuperNode authentication needs one). Raises `CollaboratorRejectedError`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from fleet.federation.certificates import issue_problem
    from fleet.hub import ADDON_NAME

    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
        authority = x509.load_pem_x509_certificate(ca_pem.encode())
    except ValueError as error:
        raise CollaboratorRejectedError(f"cluster {cluster}: expected a PEM certificate ({error})") from error
    problem = issue_problem(certificate, authority)
    if problem is not None:
        raise CollaboratorRejectedError(f"cluster {cluster}: the certificate {problem}")
    group = f"system:open-cluster-management:cluster:{cluster}:addon:{ADDON_NAME}"
    organizations = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if group not in organizations:
        raise CollaboratorRejectedError(f"cluster {cluster}: the certificate names {organizations}, not {group!r}")
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CollaboratorRejectedError(f"cluster {cluster}: expected an EC key (Flower's SuperNode authentication)")
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def run_config(spec: FederatedLearningSpec, model_dir: str) -> dict[str, str | int | float]:
    """The ServerApp's run config for a job on the hub (no held-out split there: collaborators evaluate)."""
    return federation_run_config(spec.server.rounds, spec.server.min_available_clients, spec.training, model_dir)


@dataclass
class FlowerRunBackend:
    address_of: Callable[[JobRef], str] = internal_address
    """Where a job's SuperLink answers the controller (its in-hub Service)."""
    app: Path | None = None
    """A Flower app folder to submit instead of fleet's own (staged from the installed package)."""

    def submit(self, job: JobRef, spec: FederatedLearningSpec, model_dir: str, ca_pem: str | None) -> int:
        """Start the job's run on its SuperLink as `fleet run` does: the same FAB, the same run config."""
        from fleet.federation.bundle import stage_app
        from fleet.federation.control import ControlClient

        address = self.address_of(job)
        with tempfile.TemporaryDirectory(prefix="fleet-submit-") as folder:
            root = Path(folder)
            app = stage_app(root / "app", self.app)
            try:
                with ControlClient(address, _write_ca(root, ca_pem)) as client:
                    return client.start_run(app, run_config(spec, model_dir))
            except Exception as error:  # gRPC and Flower raise many kinds; each means "not started"
                raise RunSubmissionError(f"the SuperLink at {address} did not start the run: {error}") from error

    def failure(self, job: JobRef, run_id: int, ca_pem: str | None) -> str | None:
        from fleet.federation.control import ControlClient

        with tempfile.TemporaryDirectory(prefix="fleet-state-") as folder:
            ca = _write_ca(Path(folder), ca_pem)
            with ControlClient(self.address_of(job), ca) as client:
                state = client.run_state(run_id)
        if state is None:
            return f"the SuperLink no longer knows run {run_id} (was it restarted without its database?)"
        if state.status == "finished" and state.sub_status != "completed":
            return f"run {run_id} ended {state.sub_status}: {state.details or 'no details'}"
        return None

    def stop(self, job: JobRef, run_id: int, ca_pem: str | None) -> None:
        from fleet.federation.control import ControlClient

        with tempfile.TemporaryDirectory(prefix="fleet-stop-") as folder:
            ca = _write_ca(Path(folder), ca_pem)
            with ControlClient(self.address_of(job), ca) as client:
                client.stop_run(run_id)

    def register(self, job: JobRef, cluster: str, public_key: bytes, ca_pem: str) -> None:
        from fleet.federation.control import ControlClient

        with tempfile.TemporaryDirectory(prefix="fleet-register-") as folder:
            ca = _write_ca(Path(folder), ca_pem)
            with ControlClient(self.address_of(job), ca) as client:
                client.register_node(public_key, cluster)


def _write_ca(folder: Path, ca_pem: str | None) -> Path | None:
    if ca_pem is None:
        return None
    path = folder / "ca.pem"
    path.write_text(ca_pem, encoding="utf-8")
    return path
