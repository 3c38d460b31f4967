"""Managed clusters as the hub sees them in the mutual-TLS tests: each with its klusterlet's registration Secret (a
certificate OCM's add-on registration signed with the hub CA the controller made), its data, its collaborator's pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.controller.identity import key_digest

from .conftest import registration_csr, sign_registration
from .operator_support import Hub
from .pods import LocalPod, secret_files

CSRS = "certificates.k8s.io/v1/certificatesigningrequests"


class Spoke:
    """One managed cluster: its klusterlet's registration Secret, its data, the pod of its collaborator."""

    def __init__(self, cluster: str, root: Path) -> None:
        self.cluster = cluster
        self.data = root / cluster / "data"
        (self.data / "digits" / cluster).mkdir(parents=True)
        (self.data / "digits" / cluster / "part.npz").write_bytes(b"x")
        self.secret: dict[str, str] = {}
        self.key: ec.EllipticCurvePrivateKey | None = None
        self.pod: LocalPod | None = None

    def hold(self, certificate: str, key: ec.EllipticCurvePrivateKey) -> None:
        """The klusterlet stores a newly signed certificate and its key (PEM, as keyutil writes EC keys)."""
        self.key = key
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        self.secret = {"tls.crt": certificate, "tls.key": pem.decode()}

    @property
    def digest(self) -> str:
        assert self.key is not None
        public = self.key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return key_digest(public)


def hub_object(hub: Hub, api: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    for obj in hub.objects(api):
        metadata = obj["metadata"]
        if metadata["name"] == name and (namespace is None or metadata.get("namespace") == namespace):
            return obj
    return None


async def sign(hub: Hub, spoke: Spoke) -> None:
    """OCM signs a registration for the spoke (a new key each time) and its klusterlet stores it."""
    ca = hub_object(hub, "v1/secrets", "fleet-hub-ca")
    assert ca is not None
    files = secret_files(ca)
    certificate, key = sign_registration(files["tls.crt"], files["tls.key"], spoke.cluster)
    spoke.hold(certificate, key)
    await hub.create(CSRS, None, registration_csr(certificate, spoke.cluster))
