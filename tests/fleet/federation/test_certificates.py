"""The hub CA, the SuperLink certificate and the cluster identities (the local OCM registration)."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.federation import certificates
from fleet.federation.certificates import (
    CertificateAuthority,
    CertificateRejectedError,
    create_cluster_identity,
    issue_problem,
    verified_auth_public_key,
)
from fleet.hub import OPERATOR_USER


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_certificate_is_signed_by_the_ca_for_localhost(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    pair = ca.issue_server(tmp_path)
    certificate = _load(pair.certificate)
    certificate.verify_directly_issued_by(_load(ca.path))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert (pair.key.stat().st_mode & 0o777) == 0o600


def test_cluster_identity_is_a_ca_signed_csr_whose_key_is_the_supernode_auth_key(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    identity = create_cluster_identity(tmp_path / "clusters", "eu-west-hospital", ca)
    certificate = _load(identity.certificate)
    certificate.verify_directly_issued_by(_load(ca.path))
    # OCM's default add-on subject (addon-framework pkg/agent/inteface.go, DefaultUser and DefaultGroups).
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "system:open-cluster-management:cluster:eu-west-hospital:addon:fleet-collaborator:agent:fleet-collaborator-agent"
    )
    assert [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:open-cluster-management:cluster:eu-west-hospital:addon:fleet-collaborator",
        "system:open-cluster-management:addon:fleet-collaborator",
        "system:authenticated",
    ]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
    # Flower loads the SuperNode key as an OpenSSH EC private key on a NIST curve.
    auth_key = serialization.load_ssh_private_key(identity.auth_key.read_bytes(), None)
    assert auth_key.public_key() == certificate.public_key()
    assert identity.auth_public_key.read_bytes().startswith(b"ecdsa-sha2-nistp256 ")
    assert verified_auth_public_key(identity, ca.path) == identity.auth_public_key.read_bytes()
    assert identity.trusted_ca.read_bytes() == ca.path.read_bytes()


def test_certificate_of_another_ca_is_rejected(tmp_path: Path) -> None:
    hub = CertificateAuthority.create(tmp_path / "hub")
    other = CertificateAuthority.create(tmp_path / "other", "someone else's CA")
    identity = create_cluster_identity(tmp_path / "clusters", "eu-central-lab", other)
    with pytest.raises(CertificateRejectedError, match="not signed by the hub CA"):
        verified_auth_public_key(identity, hub.path)


def test_a_certificate_past_its_validity_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = CertificateAuthority.create(tmp_path)
    identity = create_cluster_identity(tmp_path / "clusters", "eu-central-lab", ca)
    assert issue_problem(_load(identity.certificate), _load(ca.path)) is None
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=20 * 365)
    monkeypatch.setattr(certificates, "_now", lambda: later)
    assert issue_problem(_load(identity.certificate), _load(ca.path)) == "is not valid now"
    with pytest.raises(CertificateRejectedError, match=r"'eu-central-lab' .* is not valid now \(hub CA: "):
        verified_auth_public_key(identity, ca.path)


def test_auth_key_that_the_certificate_does_not_certify_is_rejected(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    first = create_cluster_identity(tmp_path / "a", "eu-central-lab", ca)
    second = create_cluster_identity(tmp_path / "b", "eu-central-lab", ca)
    shutil.copy(second.auth_public_key, first.auth_public_key)
    with pytest.raises(CertificateRejectedError, match="not the key its certificate certifies"):
        verified_auth_public_key(first, ca.path)


def test_certificate_naming_another_cluster_is_rejected(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    identity = create_cluster_identity(tmp_path, "eu-central-lab", ca)
    impostor = type(identity)(
        "eu-west-hospital",
        identity.certificate,
        identity.key,
        identity.auth_key,
        identity.auth_public_key,
        identity.trusted_ca,
    )
    with pytest.raises(CertificateRejectedError, match="expected the add-on user of cluster 'eu-west-hospital'"):
        verified_auth_public_key(impostor, ca.path)


def test_csr_with_a_forged_signature_is_not_signed(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    identity = create_cluster_identity(tmp_path, "eu-central-lab", ca)
    good = x509.load_pem_x509_csr(
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eu-central-lab")]))
        .sign(
            serialization.load_pem_private_key(identity.key.read_bytes(), None),  # type: ignore[arg-type]
            hashes.SHA384(),
        )
        .public_bytes(serialization.Encoding.PEM)
    )
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF  # corrupt the signature
    forged = x509.load_der_x509_csr(bytes(der))
    with pytest.raises(CertificateRejectedError, match="signature"):
        ca.sign_cluster(forged)


def test_the_hub_ca_and_server_certificates_outlive_a_local_run(tmp_path: Path) -> None:
    from fleet.controller.hub import HUB_CA_VALIDITY, SERVER_VALIDITY
    from fleet.federation.certificates import LOCAL_VALIDITY, CertificateAuthority

    local = CertificateAuthority.create(tmp_path / "local")
    hub = CertificateAuthority.create(tmp_path / "hub", validity=HUB_CA_VALIDITY)
    server = _load(hub.issue_server(tmp_path / "server", validity=SERVER_VALIDITY).certificate)
    lifetime = lambda c: c.not_valid_after_utc - c.not_valid_before_utc  # noqa: E731
    assert lifetime(local.certificate) < datetime.timedelta(days=3) and LOCAL_VALIDITY < SERVER_VALIDITY
    assert lifetime(hub.certificate) > datetime.timedelta(days=3000)
    assert datetime.timedelta(days=364) < lifetime(server) < datetime.timedelta(days=366)


def test_the_ca_key_is_rsa_in_pkcs1_the_one_form_ocms_signer_parses(tmp_path: Path) -> None:
    """addon-framework pkg/utils/csr_helpers.go signs a CustomSigner CSR with the key parsed by Go's
    x509.ParsePKCS1PrivateKey: PEM type "RSA PRIVATE KEY" (PKCS #1), nothing else."""
    CertificateAuthority.create(tmp_path)
    pem = (tmp_path / "ca.key").read_bytes()
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    # openssl reads it as an RSA key in the traditional (PKCS #1) form.
    shown = subprocess.run(
        ["openssl", "rsa", "-in", str(tmp_path / "ca.key"), "-noout", "-check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0 and "RSA key ok" in shown.stdout, shown.stderr


def test_an_operator_certificate_is_a_client_certificate_of_the_operator(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    pair = ca.issue_operator(tmp_path)
    certificate = x509.load_pem_x509_certificate(pair.certificate.read_bytes())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == OPERATOR_USER
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert issue_problem(certificate, ca.certificate) is None
