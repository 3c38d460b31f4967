"""Which certificate is a cluster's: the upstream rules the controller's identity checks rest on, each stated
with its source, and the checks themselves."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.controller.identity import (
    CollaboratorRejectedError,
    Subject,
    expected_subject,
    identity_from_csr,
    identity_from_record,
    identity_record,
    key_digest,
)
from fleet.controller.objects import SUPERNODE_KEY_PROGRAM
from fleet.federation.certificates import CertificateAuthority, pkcs1_key
from fleet.hub import ADDON_AGENT, ADDON_NAME, ADDON_SIGNER, collaborator_groups, collaborator_user, requesting_cluster

from .conftest import klusterlet_user, registration_csr, sign_registration


def _now() -> datetime.datetime:
    # Per check, not per module: a module imported minutes before its test would predate the certificates.
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def hub_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("ca")
    authority = CertificateAuthority.create(folder)
    return authority.path.read_text(), (folder / "ca.key").read_text()


def test_the_requester_is_the_klusterlet_user_and_names_its_cluster() -> None:
    # ocm pkg/registration/register/csr/csr.go: the klusterlet's hub identity is
    # CommonName: fmt.Sprintf("%s%s:%s", user.SubjectPrefix, clusterName, agentName), with
    # SubjectPrefix = "system:open-cluster-management:" (pkg/registration/hub/user); the klusterlet's
    # registration agent creates the add-on CSRs with that identity (pkg/registration/spoke/addon/
    # registration_controller.go, through the agent's hub CSR client), so spec.username is it.
    assert requesting_cluster("system:open-cluster-management:eu-west-a:x7k2q") == "eu-west-a"
    assert requesting_cluster("system:open-cluster-management:cluster:abc") == "cluster"  # a cluster named so
    # The add-on's own user (addon-framework agent.DefaultUser) shares the prefix and is no klusterlet.
    assert requesting_cluster(collaborator_user("eu-west-a")) is None
    assert requesting_cluster("system:open-cluster-management:managed-clusters") is None
    assert requesting_cluster("system:serviceaccount:open-cluster-management-hub:addon-manager-controller-sa") is None
    assert requesting_cluster("system:open-cluster-management:eu-west-a:") is None


def test_the_default_subject_is_the_template_add_ons() -> None:
    # addon-framework pkg/agent/inteface.go: DefaultUser = "system:open-cluster-management:cluster:%s:addon:%s:
    # agent:%s", DefaultGroups = [cluster:<c>:addon:<a>, addon:<a>, system:authenticated]; ocm
    # pkg/addon/templateagent/template_agent.go: agentName = fmt.Sprintf("%s-agent", addonName), and
    # registration.go gives a CustomSigner registration without `subject` that default.
    assert f"{ADDON_NAME}-agent" == ADDON_AGENT
    assert expected_subject("a") == Subject(
        "system:open-cluster-management:cluster:a:addon:fleet-collaborator:agent:fleet-collaborator-agent",
        (
            "system:open-cluster-management:cluster:a:addon:fleet-collaborator",
            "system:open-cluster-management:addon:fleet-collaborator",
            "system:authenticated",
        ),
    )


def test_the_subject_the_hub_reports_wins() -> None:
    # The spoke builds its CSR's subject from the ManagedClusterAddOn's status.registrations (ocm
    # pkg/registration/spoke/addon/configuration.go: x509Subject), which the hub's add-on manager writes: that is
    # the subject the certificate carries. Shape as the v1alpha1 API returns it (the CRD's status.registrations).
    addon = {
        "status": {
            "registrations": [
                {"signerName": "kubernetes.io/kube-apiserver-client", "subject": {"user": "other"}},
                {"signerName": ADDON_SIGNER, "subject": {"user": "custom-user", "groups": ["g1", "g2"]}},
            ]
        }
    }
    assert expected_subject("a", addon) == Subject("custom-user", ("g1", "g2"))
    assert expected_subject("a", {"status": {}}) == expected_subject("a")


def test_a_cluster_s_own_csr_gives_its_identity(hub_ca: tuple[str, str]) -> None:
    certificate, key = sign_registration(*hub_ca, "eu-west-a")
    identity = identity_from_csr(registration_csr(certificate, "eu-west-a"), hub_ca[0], {}, _now())
    assert identity is not None and identity.cluster == "eu-west-a"
    openssh = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert identity.public_key == openssh
    assert identity.requester == klusterlet_user("eu-west-a")
    assert identity_from_csr(registration_csr(None, "eu-west-a"), hub_ca[0], {}, _now()) is None  # not signed yet


def test_a_certificate_another_cluster_had_signed_in_this_one_s_name_is_refused(hub_ca: tuple[str, str]) -> None:
    # ocm pkg/addon/templateagent/registration.go: CustomerSignerCSRApprover approves every CSR of the signer
    # ("Customer signer CSR is approved"), and the CSR's cluster label "is only an hint for cluster name. Anyone
    # could set/modify it" (pkg/registration/register/csr/csr.go). So eu-west-b's klusterlet can have the hub
    # sign a certificate with eu-west-a's subject and label: only spec.username tells.
    certificate, _ = sign_registration(*hub_ca, "eu-west-a")
    forged = registration_csr(certificate, "eu-west-a", requester=klusterlet_user("eu-west-b"))
    with pytest.raises(CollaboratorRejectedError, match="requested by cluster eu-west-b's klusterlet"):
        identity_from_csr(forged, hub_ca[0], {}, _now())
    anyone = registration_csr(certificate, "eu-west-a", requester="system:serviceaccount:default:builder")
    with pytest.raises(CollaboratorRejectedError, match="not by a managed cluster's klusterlet"):
        identity_from_csr(anyone, hub_ca[0], {}, _now())


def test_other_cas_other_subjects_expired_or_rsa_certificates_are_refused(
    hub_ca: tuple[str, str], tmp_path: Path
) -> None:
    other = CertificateAuthority.create(tmp_path / "other")
    foreign, _ = sign_registration(other.path.read_text(), (tmp_path / "other" / "ca.key").read_text(), "a")
    with pytest.raises(CollaboratorRejectedError, match="not signed by the hub CA"):
        identity_from_csr(registration_csr(foreign, "a"), hub_ca[0], {}, _now())
    theirs, _ = sign_registration(*hub_ca, "b")  # b's subject, requested by a's klusterlet for a
    with pytest.raises(CollaboratorRejectedError, match="not the subject of the cluster's add-on registration"):
        identity_from_csr(registration_csr(theirs, "a"), hub_ca[0], {}, _now())
    old, _ = sign_registration(*hub_ca, "a", not_before=_now() - datetime.timedelta(hours=30))
    with pytest.raises(CollaboratorRejectedError, match="not valid now"):
        identity_from_csr(registration_csr(old, "a"), hub_ca[0], {}, _now())
    valid, _ = sign_registration(*hub_ca, "a")
    wrong_signer = registration_csr(valid, "a")
    wrong_signer["spec"]["signerName"] = "kubernetes.io/kube-apiserver-client"
    with pytest.raises(CollaboratorRejectedError, match="signer"):
        identity_from_csr(wrong_signer, hub_ca[0], {}, _now())


def test_the_record_keeps_the_identity_and_is_checked_again(hub_ca: tuple[str, str], tmp_path: Path) -> None:
    certificate, _ = sign_registration(*hub_ca, "a")
    identity = identity_from_csr(registration_csr(certificate, "a"), hub_ca[0], {}, _now())
    assert identity is not None
    record = identity_record(identity, "fleet-system")
    assert record["metadata"]["namespace"] == "fleet-system"  # where no spoke can write
    again = identity_from_record(record, hub_ca[0], expected_subject("a"))
    assert (again.public_key, again.requester, again.source) == (
        identity.public_key,
        identity.requester,
        identity.source,
    )
    assert again.requested_at == identity.requested_at.replace(microsecond=0)
    # A replaced hub CA no longer vouches for it; a record naming no klusterlet is not one of ours.
    other = CertificateAuthority.create(tmp_path / "other")
    with pytest.raises(CollaboratorRejectedError, match="not signed by the hub CA"):
        identity_from_record(record, other.path.read_text(), expected_subject("a"))
    tampered = {**record, "data": {**record["data"], "requester": "system:serviceaccount:a:b"}}
    with pytest.raises(CollaboratorRejectedError, match="no cluster's requester"):
        identity_from_record(tampered, hub_ca[0], expected_subject("a"))


def test_the_latest_requested_certificate_is_the_one_the_klusterlet_holds(hub_ca: tuple[str, str]) -> None:
    # ocm pkg/registration/register/csr/csr.go (and clientcert/cert_controller.go): each CSR is made with a
    # fresh key (keyutil.MakeEllipticPrivateKeyPEM) and the agent keeps only the key of its latest CSR, so the
    # CSR created last wins, even when the hub signs an earlier one later.
    first_at = _now() - datetime.timedelta(minutes=10)
    later_signed, _ = sign_registration(*hub_ca, "a", not_before=_now() - datetime.timedelta(minutes=1))
    earlier_signed, _ = sign_registration(*hub_ca, "a", not_before=_now() - datetime.timedelta(minutes=5))
    first = identity_from_csr(registration_csr(later_signed, "a", created=first_at), hub_ca[0], {}, _now())
    second = identity_from_csr(registration_csr(earlier_signed, "a", created=_now()), hub_ca[0], {}, _now())
    assert first is not None and second is not None
    assert second.newer_than(first) and not first.newer_than(second)


def test_the_init_program_converts_the_key_and_checks_it_is_the_registered_one(tmp_path: Path) -> None:
    # flower-supernode reads --auth-supernode-private-key with cryptography's load_ssh_private_key; the
    # klusterlet's key is ECDSA P-256 in PEM (keyutil.MakeEllipticPrivateKeyPEM: "EC PRIVATE KEY").
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "tls.key"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    out = tmp_path / "supernode.key"
    run = [sys.executable, "-c", SUPERNODE_KEY_PROGRAM, str(pem), str(out)]
    subprocess.run([*run, key_digest(public)], check=True, timeout=60)
    loaded = serialization.load_ssh_private_key(out.read_bytes(), None)
    assert (
        loaded.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) == public
    )
    out.unlink()
    refused = subprocess.run([*run, "0" * 64], capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0 and "waiting for it" in refused.stderr
    assert not out.exists()  # the SuperNode never starts with a key the hub did not register


def test_the_hub_ca_key_is_pkcs1(hub_ca: tuple[str, str]) -> None:
    # ocm pkg/addon/templateagent/registration.go (extractCAdata) tries PKCS #8 then PKCS #1; addon-framework
    # pkg/utils/csr_helpers.go, whose signer the key is handed to, parses it with x509.ParsePKCS1PrivateKey only.
    assert hub_ca[1].startswith("-----BEGIN RSA PRIVATE KEY-----")
    key = serialization.load_pem_private_key(hub_ca[1].encode(), None)
    assert pkcs1_key(key).decode() == hub_ca[1]  # type: ignore[arg-type]
    assert collaborator_groups("a")[0] in expected_subject("a").groups
