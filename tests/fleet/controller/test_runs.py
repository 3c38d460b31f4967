"""Run submission helpers: the run config the ServerApp reads, and which collaborator keys the hub vouches for."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet.controller.runs import CollaboratorRejectedError, collaborator_public_key, run_config
from fleet.federation.certificates import CertificateAuthority
from fleet.models import FederatedLearningSpec

from .conftest import ROOT, job


def test_the_run_config_has_exactly_the_app_s_keys() -> None:
    manifest = tomllib.loads((ROOT / "fleet" / "app" / "pyproject.toml").read_text(encoding="utf-8"))
    spec = FederatedLearningSpec.from_job(job(), {})
    config = run_config(spec, "/models/digits")
    assert set(config) == set(manifest["tool"]["flwr"]["app"]["config"])
    assert config["num-rounds"] == 3 and config["model-dir"] == "/models/digits"


def _certificate(authority: CertificateAuthority, organization: str, key: ec.EllipticCurvePrivateKey) -> str:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    issuer_key: ec.EllipticCurvePrivateKey = serialization.load_pem_private_key(  # type: ignore[assignment]
        (authority.path.parent / "ca.key").read_bytes(), None
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(issuer_key, hashes.SHA384())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


GROUP = "system:open-cluster-management:cluster:{}:addon:fleet-collaborator"


def test_a_hub_signed_collaborator_certificate_gives_its_openssh_key(tmp_path: Path) -> None:
    hub = CertificateAuthority.create(tmp_path / "hub")
    key = ec.generate_private_key(ec.SECP384R1())
    pem = _certificate(hub, GROUP.format("eu-west-a"), key)
    expected = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert collaborator_public_key(pem, hub.path.read_text(), "eu-west-a") == expected


def test_certificates_of_another_ca_or_another_cluster_are_rejected(tmp_path: Path) -> None:
    hub = CertificateAuthority.create(tmp_path / "hub")
    other = CertificateAuthority.create(tmp_path / "other")
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(CollaboratorRejectedError, match="not signed by the hub CA"):
        collaborator_public_key(_certificate(other, GROUP.format("a"), key), hub.path.read_text(), "a")
    with pytest.raises(CollaboratorRejectedError, match="not 'system:open-cluster-management:cluster:a:"):
        collaborator_public_key(_certificate(hub, GROUP.format("b"), key), hub.path.read_text(), "a")
    with pytest.raises(CollaboratorRejectedError, match="expected a PEM certificate"):
        collaborator_public_key("not a certificate", hub.path.read_text(), "a")
