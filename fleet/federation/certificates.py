"""The credentials of a federation: a hub CA, the SuperLink's server certificate, one client identity per
cluster, and the operator's client certificate.

On the fleet, each managed cluster's identity comes from the OCM add-on registration: the agent makes a key
and a CSR with the subject OCM gives the add-on (`fleet.hub.collaborator_user`), the hub signs it with this CA.
Here the same happens on one machine: `create_cluster_identity` is the cluster's side (key + CSR),
`CertificateAuthority.sign_cluster` the hub's. The cluster's EC key (P-256, what OCM's registration agent makes;
a NIST curve as Flower requires) is also its Flower SuperNode authentication key: `verified_auth_public_key`
gives the OpenSSH public key the SuperLink registers, and only for a certificate that the hub CA signed.

The CA is RSA with its key in PKCS #1 ("RSA PRIVATE KEY"): OCM's CSR signer for a CustomSigner registration
reads the signing CA's key with Go's ``x509.ParsePKCS1PrivateKey`` (open-cluster-management-io/addon-framework,
``pkg/utils/csr_helpers.go``), which takes nothing else.
"""

from __future__ import annotations

import datetime
import ipaddress
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.hub import OPERATOR_USER, collaborator_groups, collaborator_user

# OCM's add-on user names are longer than RFC 5280's 64-character bound on a common name; cryptography warns
# each time it builds or parses one. Kubernetes (Go's x509) and OpenSSL take them: the warning says nothing here.
warnings.filterwarnings("ignore", message="Attribute's length must be >= 1 and <= 64", category=UserWarning)

LOCAL_HOSTS = ("localhost", "127.0.0.1")
LOCAL_VALIDITY = datetime.timedelta(days=2)
"""`fleet run`'s CA and certificates: a fresh set for every run, so short-lived."""
CA_KEY_BITS = 3072
_ORGANIZATION = "fleet"


class CertificateRejectedError(Exception):
    """A cluster certificate that the hub does not accept (not signed by its CA, wrong key, expired)."""


@dataclass(frozen=True)
class KeyPair:
    certificate: Path
    """PEM certificate."""
    key: Path
    """PEM (PKCS #8) private key."""


@dataclass(frozen=True)
class ClusterIdentity:
    cluster: str
    certificate: Path
    """PEM certificate signed by the hub CA; also serves the SuperNode's local Runtime API (SAN localhost)."""
    key: Path
    """PEM private key for TLS."""
    auth_key: Path
    """The same key in OpenSSH format: the SuperNode's `--auth-supernode-private-key`."""
    auth_public_key: Path
    """The OpenSSH public key registered with the SuperLink."""
    trusted_ca: Path
    """The CA bundle the cluster got with its certificate; its SuperNode verifies the SuperLink with it."""


class CertificateAuthority:
    """The hub CA: signs the SuperLink's server certificate, the clusters' CSRs and the operator's certificate."""

    def __init__(self, certificate: x509.Certificate, key: rsa.RSAPrivateKey, path: Path) -> None:
        self.certificate = certificate
        self._key = key
        self.path = path
        """The CA certificate (PEM) every party verifies against."""

    @classmethod
    def create(
        cls, directory: Path, name: str = "fleet hub CA", validity: datetime.timedelta = LOCAL_VALIDITY
    ) -> CertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
        subject = _subject(name)
        start = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(minutes=5))
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        path = directory / "ca.pem"
        _write_private(directory / "ca.key", pkcs1_key(key))
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(certificate, key, path)

    def issue_server(
        self,
        directory: Path,
        name: str = "superlink",
        hosts: tuple[str, ...] = LOCAL_HOSTS,
        validity: datetime.timedelta = LOCAL_VALIDITY,
    ) -> KeyPair:
        """A key and a certificate for the SuperLink, valid for ``hosts``."""
        key = ec.generate_private_key(ec.SECP384R1())
        certificate = self._sign(_subject(name), key.public_key(), hosts, server=True, client=False, validity=validity)
        return _save_pair(directory, name, key, certificate)

    def issue_operator(
        self,
        directory: Path,
        name: str = "operator",
        validity: datetime.timedelta = LOCAL_VALIDITY,
        user: str = OPERATOR_USER,
    ) -> KeyPair:
        """A client certificate for the operator (`fleet.hub.OPERATOR_USER`, or ``user``: a hub job's ServerApp,
        `fleet.hub.serverapp_user`): who may use a SuperLink's Control and Runtime APIs (submit and stop runs, the
        ServerApp's own connection)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _subject(user)
        certificate = self._sign(subject, key.public_key(), (), server=False, client=True, validity=validity)
        return _save_pair(directory, name, key, certificate)

    def sign_cluster(
        self, csr: x509.CertificateSigningRequest, validity: datetime.timedelta = LOCAL_VALIDITY
    ) -> x509.Certificate:
        """Sign a cluster's CSR, as the hub does when it accepts a managed cluster's add-on registration."""
        if not csr.is_signature_valid:
            raise CertificateRejectedError("the CSR's signature does not match its public key")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CertificateRejectedError("expected an EC key in the CSR")
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise CertificateRejectedError("expected a common name (the add-on's user) in the CSR")
        return self._sign(csr.subject, public_key, LOCAL_HOSTS, server=True, client=True, validity=validity)

    def _sign(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        hosts: tuple[str, ...],
        *,
        server: bool,
        client: bool,
        validity: datetime.timedelta = LOCAL_VALIDITY,
        not_before: datetime.datetime | None = None,
    ) -> x509.Certificate:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        start = _now() if not_before is None else not_before + datetime.timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(minutes=5))
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.certificate.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        if hosts:
            names = x509.SubjectAlternativeName([_general_name(h) for h in hosts])
            builder = builder.add_extension(names, critical=False)
        return builder.sign(self._key, hashes.SHA256())


def collaborator_subject(cluster: str) -> x509.Name:
    """The subject OCM's add-on registration gives ``cluster``'s collaborator: its groups, then its user."""
    groups = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in collaborator_groups(cluster)]
    # Longer than RFC 5280's bound (see the filter above): built without cryptography's check.
    user = x509.NameAttribute(NameOID.COMMON_NAME, collaborator_user(cluster), _validate=False)
    return x509.Name([*groups, user])


def create_cluster_identity(
    directory: Path, cluster: str, authority: CertificateAuthority, validity: datetime.timedelta = LOCAL_VALIDITY
) -> ClusterIdentity:
    """Make a cluster's key and CSR (the cluster's side), have ``authority`` sign it (the hub's side)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(collaborator_subject(cluster))
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in LOCAL_HOSTS]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate = authority.sign_cluster(csr, validity)
    pair = _save_pair(directory, cluster, key, certificate)
    auth_key = directory / f"{cluster}.auth"
    _write_private(
        auth_key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    auth_public_key = directory / f"{cluster}.auth.pub"
    auth_public_key.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    trusted_ca = directory / f"{cluster}.ca.pem"
    trusted_ca.write_bytes(authority.path.read_bytes())
    return ClusterIdentity(cluster, pair.certificate, pair.key, auth_key, auth_public_key, trusted_ca)


def verified_auth_public_key(identity: ClusterIdentity, ca_certificate: Path) -> bytes:
    """The OpenSSH public key to register for ``identity``, once its certificate checks out with the hub CA.

    Raises `CertificateRejectedError` when the certificate is not signed by that CA, has expired, names
    another cluster, or does not hold the same key as the authentication key.
    """
    ca = x509.load_pem_x509_certificate(ca_certificate.read_bytes())
    try:
        certificate = x509.load_pem_x509_certificate(identity.certificate.read_bytes())
    except ValueError as error:
        raise CertificateRejectedError(f"{identity.certificate}: expected a PEM certificate ({error})") from error
    problem = issue_problem(certificate, ca)
    if problem is not None:
        raise CertificateRejectedError(
            f"the certificate of cluster {identity.cluster!r} ({identity.certificate}) {problem} "
            f"(hub CA: {ca_certificate})"
        )
    names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [collaborator_user(identity.cluster)]:
        raise CertificateRejectedError(
            f"the certificate names {names!r}, expected the add-on user of cluster {identity.cluster!r} "
            f"({collaborator_user(identity.cluster)})"
        )
    public_key = serialization.load_ssh_public_key(identity.auth_public_key.read_bytes())
    if public_key != certificate.public_key():
        raise CertificateRejectedError(
            f"the authentication key of cluster {identity.cluster!r} is not the key its certificate certifies"
        )
    return identity.auth_public_key.read_bytes()


def issue_problem(certificate: x509.Certificate, authority: x509.Certificate) -> str | None:
    """Why ``certificate`` is not one that ``authority`` signed and that is valid now; None when it is. The check
    every collaborator identity passes, locally (`verified_auth_public_key`) and on the hub (the controller)."""
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return "is not signed by the hub CA"
    if not certificate.not_valid_before_utc <= _now() <= certificate.not_valid_after_utc:
        return "is not valid now"
    return None


def _subject(name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )


def server_names(certificate_pem: str) -> tuple[str, ...]:
    """The host names and addresses a PEM certificate is valid for (its subject alternative names); none when it
    cannot be read."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return ()
    return tuple(str(name.value) for name in names if isinstance(name, x509.DNSName | x509.IPAddress))


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _save_pair(directory: Path, name: str, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{name}.key"
    certificate_path = directory / f"{name}.pem"
    _write_private(key_path, _pem_key(key))
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return KeyPair(certificate_path, key_path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pkcs1_key(key: rsa.RSAPrivateKey) -> bytes:
    """``-----BEGIN RSA PRIVATE KEY-----``: PKCS #1, the one form OCM's CSR signer parses."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def _write_private(path: Path, content: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(content)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
