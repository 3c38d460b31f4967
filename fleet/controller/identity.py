"""Each collaborator's hub-signed identity: which certificate, and so which SuperNode key, belongs to a cluster.

OCM's add-on registration leaves the certificate it signed in a CertificateSigningRequest on the hub, and only
for a while: Kubernetes' CSR cleaner deletes approved, issued CSRs an hour after approval
(kubernetes/kubernetes ``pkg/controller/certificates/cleaner/cleaner.go``), while the certificate lives 24 hours
(ocm ``pkg/addon/templateagent/registration.go``: ``CustomSignerWithExpiry(..., 24*time.Hour)``) and the spoke
renews it, with a new key, when 20-25% of its life is left (ocm ``pkg/registration/register/csr/csr.go``:
``jitter(0.2, 0.25)``, ``keyutil.MakeEllipticPrivateKeyPEM``). So the controller records every certificate it
accepts in a ConfigMap of its own namespace (`identity_record`), where it outlives both the CSR and the
controller's memory, and which no spoke can write.

What is trusted: OCM approves a CustomSigner CSR without any identity check (ocm
``pkg/addon/templateagent/registration.go``: ``CustomerSignerCSRApprover`` returns true), and the CSR's
cluster label is "only an hint for cluster name. Anyone could set/modify it" (ocm
``pkg/registration/register/csr/csr.go``). Any cluster can have the hub sign a certificate in another
cluster's name. The one trustworthy identity is the CSR's requester, ``spec.username``, which the API server sets
from the klusterlet's credentials: ``system:open-cluster-management:<cluster>:<agent id>``
(`fleet.hub.requesting_cluster`). A certificate is a cluster's only when its CSR was requested by that cluster's
klusterlet, it chains to the hub CA, is valid now, names the subject the hub gave that cluster's add-on
registration (`expected_subject`) and holds an EC key (Flower's SuperNode authentication).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet.hub import (
    ADDON_NAME,
    ADDON_SIGNER,
    CONTROLLER_NAME,
    collaborator_groups,
    collaborator_user,
    requesting_cluster,
)

from .objects import COMPONENT_LABEL, CONFIG_MAP, CSR_ADDON_LABEL, CSR_CLUSTER_LABEL, MANAGED_BY_LABEL, dns_name

CLUSTER_LABEL = "fleet.dev/cluster"
IDENTITY_COMPONENT = "collaborator-identity"
OCM_CERTIFICATE_LIFETIME = datetime.timedelta(hours=24)
"""How long the hub's add-on manager signs a template add-on's CustomSigner certificate for (ocm
``pkg/addon/templateagent/registration.go``)."""
OCM_RENEWAL_LEFT = (0.20, 0.25)
"""The share of its life left when the spoke renews it, with a new key (ocm ``pkg/registration/register/csr/csr.go``:
``jitter(0.2, 0.25)``)."""
CSR_KEPT_AFTER_ISSUANCE = datetime.timedelta(hours=1)
"""Kubernetes' CSR cleaner deletes an approved CSR with a certificate this long after approval, polling hourly
(kubernetes ``pkg/controller/certificates/cleaner/cleaner.go``: ``approvedExpiration``, ``pollingInterval``)."""


class CollaboratorRejectedError(Exception):
    """A certificate the hub does not vouch for as this cluster's: the message says why."""


@dataclass(frozen=True)
class Subject:
    """The subject the hub gives a cluster's add-on registration: its certificate's common name and groups."""

    user: str
    groups: tuple[str, ...]


def expected_subject(cluster: str, addon: Mapping[str, Any] | None = None) -> Subject:
    """The subject of ``cluster``'s collaborator registration: as the hub reports it in the ManagedClusterAddOn's
    ``status.registrations`` (v1alpha1) for the add-on's signer, else OCM's default for a template add-on
    (addon-framework ``agent.DefaultUser``/``DefaultGroups`` with agent name ``<addon>-agent``)."""
    for registration in ((addon or {}).get("status") or {}).get("registrations") or []:
        if registration.get("signerName") != ADDON_SIGNER:
            continue
        subject = registration.get("subject") or {}
        user = subject.get("user")
        if isinstance(user, str) and user:
            return Subject(user, tuple(str(g) for g in subject.get("groups") or ()))
    return Subject(collaborator_user(cluster), collaborator_groups(cluster))


@dataclass(frozen=True)
class CollaboratorIdentity:
    cluster: str
    certificate: str
    """PEM, as the hub signed it."""
    requester: str
    """The CSR's ``spec.username``: the cluster's klusterlet."""
    source: str
    """The CSR's name."""
    requested_at: datetime.datetime
    """The CSR's creation: the klusterlet keeps only the key of its latest CSR."""
    not_before: datetime.datetime
    not_after: datetime.datetime
    public_key: bytes
    """The certificate's key in OpenSSH form: what the job's SuperLink registers for the cluster's SuperNode."""

    @property
    def key_digest(self) -> str:
        return key_digest(self.public_key)

    def valid_at(self, now: datetime.datetime) -> bool:
        return self.not_before <= now <= self.not_after

    def newer_than(self, other: CollaboratorIdentity | None) -> bool:
        """Requested later (ties: issued later): the one whose key the cluster holds now."""
        if other is None:
            return True
        return (self.requested_at, self.not_before) > (other.requested_at, other.not_before)


def key_digest(openssh_public_key: bytes) -> str:
    """The SHA-256 of a public key's OpenSSH line: how objects name a key (the SuperNode checks it too)."""
    return hashlib.sha256(openssh_public_key.strip()).hexdigest()


def identity_from_csr(
    csr: Mapping[str, Any], ca_pem: str, subject_of: Mapping[str, Subject], now: datetime.datetime
) -> CollaboratorIdentity | None:
    """The identity an add-on registration CSR gives its requester's cluster; None while no certificate is issued.
    ``subject_of``: the clusters' registration subjects where the hub reports them. Raises
    `CollaboratorRejectedError` for a CSR whose certificate is not its requester's cluster's."""
    import base64

    metadata = csr.get("metadata") or {}
    spec = csr.get("spec") or {}
    issued = (csr.get("status") or {}).get("certificate")
    if not issued:
        return None
    name = str(metadata.get("name", ""))
    labelled = str((metadata.get("labels") or {}).get(CSR_CLUSTER_LABEL) or "")
    requester = str(spec.get("username") or "")
    cluster = requesting_cluster(requester)
    if cluster is None:
        raise CollaboratorRejectedError(
            f"CSR {name} (for cluster {labelled or '?'}) was requested by {requester or 'nobody'}, not by a "
            "managed cluster's klusterlet"
        )
    if labelled != cluster:
        raise CollaboratorRejectedError(
            f"CSR {name} is labelled for cluster {labelled or '?'} but was requested by cluster {cluster}'s "
            f"klusterlet ({requester})"
        )
    if spec.get("signerName") != ADDON_SIGNER:
        raise CollaboratorRejectedError(f"CSR {name} of cluster {cluster}: signer {spec.get('signerName')!r}")
    try:
        pem = base64.b64decode(issued).decode()
    except ValueError as error:
        raise CollaboratorRejectedError(f"CSR {name} of cluster {cluster}: no PEM certificate ({error})") from error
    subject = subject_of.get(cluster) or expected_subject(cluster)
    identity = verify(cluster, pem, ca_pem, subject, requester=requester, source=name, requested_at=_time(metadata))
    if not identity.valid_at(now):
        raise CollaboratorRejectedError(f"CSR {name} of cluster {cluster}: the certificate is not valid now")
    return identity


def verify(
    cluster: str,
    certificate_pem: str,
    ca_pem: str,
    subject: Subject,
    *,
    requester: str,
    source: str,
    requested_at: datetime.datetime,
) -> CollaboratorIdentity:
    """``cluster``'s identity from a certificate: signed by the hub CA, naming ``subject``, an EC key (not its
    validity now: see `CollaboratorIdentity.valid_at`). Raises `CollaboratorRejectedError`."""
    not_before, not_after, public_key = _checked(cluster, certificate_pem, ca_pem, subject)
    return CollaboratorIdentity(
        cluster, certificate_pem, requester, source, requested_at, not_before, not_after, public_key
    )


@functools.lru_cache(maxsize=4096)
def _checked(
    cluster: str, certificate_pem: str, ca_pem: str, subject: Subject
) -> tuple[datetime.datetime, datetime.datetime, bytes]:
    # Cached: every reconcile of every job looks at its clusters' identities; a signature check each time is waste.
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    import fleet.federation.certificates  # noqa: F401  (its filter of cryptography's long-name warning)

    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
        authority = x509.load_pem_x509_certificate(ca_pem.encode())
    except ValueError as error:
        raise CollaboratorRejectedError(f"cluster {cluster}: expected a PEM certificate ({error})") from error
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise CollaboratorRejectedError(f"cluster {cluster}: the certificate is not signed by the hub CA") from error
    names = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    groups = {str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
    if names != [subject.user] or groups != set(subject.groups):
        raise CollaboratorRejectedError(
            f"cluster {cluster}: the certificate names {names} in {sorted(groups)}, not the subject of the "
            f"cluster's add-on registration ({subject.user} in {sorted(subject.groups)})"
        )
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CollaboratorRejectedError(f"cluster {cluster}: expected an EC key (Flower's SuperNode authentication)")
    public = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return certificate.not_valid_before_utc, certificate.not_valid_after_utc, public


# --- the record ---------------------------------------------------------------------------------------------


def record_name(cluster: str) -> str:
    return dns_name("fleet-identity", cluster, limit=253)


def identity_record(identity: CollaboratorIdentity, namespace: str) -> dict[str, Any]:
    """The ConfigMap (in the controller's namespace: no spoke writes there) that keeps an accepted identity."""
    return {
        "apiVersion": CONFIG_MAP.api_version,
        "kind": CONFIG_MAP.kind,
        "metadata": {
            "name": record_name(identity.cluster),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "fleet",
                MANAGED_BY_LABEL: CONTROLLER_NAME,
                COMPONENT_LABEL: IDENTITY_COMPONENT,
                CLUSTER_LABEL: identity.cluster,
                CSR_ADDON_LABEL: ADDON_NAME,
            },
        },
        "data": {
            "cluster": identity.cluster,
            "tls.crt": identity.certificate,
            "requester": identity.requester,
            "csr": identity.source,
            "requested-at": _rfc3339(identity.requested_at),
        },
    }


def identity_from_record(record: Mapping[str, Any], ca_pem: str, subject: Subject) -> CollaboratorIdentity:
    """The identity a record keeps, checked again against the hub CA and the cluster's subject (the CA may have
    been replaced since). Raises `CollaboratorRejectedError`."""
    data = record.get("data") or {}
    cluster = str(data.get("cluster") or "")
    requester = str(data.get("requester") or "")
    if not cluster or requesting_cluster(requester) != cluster:
        raise CollaboratorRejectedError(f"record {record.get('metadata', {}).get('name')}: no cluster's requester")
    try:
        requested_at = datetime.datetime.fromisoformat(str(data.get("requested-at", "")).replace("Z", "+00:00"))
    except ValueError as error:
        raise CollaboratorRejectedError(f"record of cluster {cluster}: requested-at ({error})") from error
    return verify(
        cluster,
        str(data.get("tls.crt", "")),
        ca_pem,
        subject,
        requester=requester,
        source=str(data.get("csr", "")),
        requested_at=requested_at,
    )


def _time(metadata: Mapping[str, Any]) -> datetime.datetime:
    text = str(metadata.get("creationTimestamp") or "")
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
