"""The controller's calls to the hub's Kubernetes API, through the official ``kubernetes`` client.

Objects are plain dicts and kinds are `objects.Kind`\\s, so one small client serves every kind, custom or not,
without discovery requests. Every call is counted (`HubClient.requests`), for the metrics and the benchmark.

Errors: `TransientError` for what a retry can cure (a conflict, throttling, a 5xx answer, no connection);
`ApiError` for the rest (the caller reports it).
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes
import urllib3

from fleet.hub import CONTROLLER_NAMESPACE, HUB_CA_SECRET, OPERATOR_SECRET

from .objects import SECRET, Kind, TlsMaterial

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from fleet.federation.certificates import CertificateAuthority

_TIMEOUT_SECONDS = 30.0
HUB_CA_VALIDITY = datetime.timedelta(days=3650)
"""The hub CA signs every collaborator's add-on registration and every SuperLink certificate: long-lived;
rotating it means replacing the fleet-hub-ca Secret."""
SERVER_VALIDITY = datetime.timedelta(days=365)
"""A job's SuperLink and ServerApp certificates, re-issued when the job's TLS Secret is recreated."""
OPERATOR_VALIDITY = datetime.timedelta(days=30)
"""The controller's own client certificate: re-issued by the controller when a fifth of its life is left."""
_MERGE_PATCH = "application/merge-patch+json"
_APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the client sends the dict as JSON


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class KubeconfigError(Exception):
    """No usable kubeconfig (nor in-cluster service account); the message names the file and the problem."""


class TransientError(ApiError):
    """A conflict (409), throttling (429), a server error (5xx) or no answer: worth retrying."""


def _is_transient(status: int) -> bool:
    return status in (0, 409, 429) or status >= 500


class HubClient:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.requests: Counter[str] = Counter()
        """Requests made, by method."""
        self.on_request: Callable[[str], None] | None = None
        """Called with the method of every request, from the thread making it (the controller's metrics)."""
        self._waited = threading.local()
        self._lock = threading.Lock()

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, context: str | None = None) -> HubClient:
        """A client for ``kubeconfig`` (or the default one), or the in-cluster service account when neither a
        kubeconfig file nor ``$KUBECONFIG`` exists."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (kubernetes.config.ConfigException, OSError, TypeError, KeyError, AttributeError, ValueError) as error:
            if kubeconfig is not None or context is not None:
                raise KubeconfigError(f"{kubeconfig or 'the default kubeconfig'}: {error}") from error
            try:
                kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
            except kubernetes.config.ConfigException as in_cluster:
                raise KubeconfigError(
                    f"no kubeconfig ($KUBECONFIG, ~/.kube/config: {error}) and not in a cluster ({in_cluster})"
                ) from in_cluster
        return cls(kubernetes.client.ApiClient(configuration))

    # --- objects --------------------------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", _path(kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        answer = self._call("GET", _path(kind, namespace), query=query)
        items: list[dict[str, Any]] = answer.get("items") or []
        for item in items:
            item.setdefault("kind", kind.kind)
            item.setdefault("apiVersion", kind.api_version)
        return items

    def create(self, kind: Kind, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj``; a `TransientError` with status 409 when it exists."""
        return self._call("POST", _path(kind, obj["metadata"].get("namespace")), body=obj)

    def apply(self, kind: Kind, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj``, or merge it into the object of the same name where one exists."""
        metadata = obj["metadata"]
        try:
            return self.create(kind, obj)
        except TransientError as error:
            if error.status != 409:
                raise
        return self._call(
            "PATCH",
            _path(kind, metadata.get("namespace"), metadata["name"]),
            body=obj,
            content_type=_MERGE_PATCH,
        )

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """Delete an object; False when it was gone already."""
        try:
            self._call("DELETE", _path(kind, namespace, name), body={"propagationPolicy": "Background"})
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def server_side_apply(
        self, kind: Kind, obj: Mapping[str, Any], *, field_manager: str, force: bool
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` (an apply configuration naming only the fields ``field_manager`` owns): the
        API server sets them, removes the fields that manager owned and no longer names, and leaves every other
        manager's fields alone. ``force`` takes over fields another manager set to other values."""
        metadata = obj["metadata"]
        query = {"fieldManager": field_manager, "force": "true" if force else "false"}
        path = _path(kind, metadata.get("namespace"), metadata["name"])
        return self._call("PATCH", path, body=obj, query=query, content_type=_APPLY_PATCH)

    def patch(self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any], *, status: bool = False) -> None:
        path = _path(kind, namespace, name) + ("/status" if status else "")
        self._call("PATCH", path, body=patch, content_type=_MERGE_PATCH)

    def request_count(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def waited_seconds(self) -> float:
        """Seconds this thread has spent waiting for the API server's answers."""
        return float(getattr(self._waited, "seconds", 0.0))

    def thread_request_count(self) -> int:
        """Requests this thread has made."""
        return int(getattr(self._waited, "requests", 0))

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        with self._lock:
            self.requests[method] += 1
        if self.on_request is not None:
            self.on_request(method)
        self._waited.requests = self.thread_request_count() + 1
        headers = {"Accept": "application/json", "Content-Type": content_type}
        started = time.perf_counter()
        try:
            serialized = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=dict(body) if body is not None else None,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(*serialized, _request_timeout=_TIMEOUT_SECONDS)
            status = int(response.status)
            data = response.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.ApiException as error:
            status, data = int(error.status or 0), (error.body or error.reason or "").encode()
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransientError(0, f"{method} {path}: {error}") from error
        finally:
            self._waited.seconds = self.waited_seconds() + time.perf_counter() - started
        if status >= 400 or status == 0:
            message = _message(data)
            kind = TransientError if _is_transient(status) else ApiError
            raise kind(status, f"{method} {path}: {message}")
        if not data:
            return {}
        answer: dict[str, Any] = json.loads(data)
        return answer


def _path(kind: Kind, namespace: str | None, name: str | None = None) -> str:
    path = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    if kind.namespaced and namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{kind.plural}"
    return f"{path}/{name}" if name else path


def _message(data: bytes | str | None) -> str:
    if not data:
        return "no details"
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        answer = json.loads(text)
    except ValueError:
        return text[:500]
    return str(answer.get("message") or answer.get("reason") or text[:500]) if isinstance(answer, dict) else text


# --- the hub CA ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubCA:
    certificate: str
    key: str

    def issue_federation(self, name: str, hosts: tuple[str, ...], serverapp_user: str) -> TlsMaterial:
        """A SuperLink server certificate for ``hosts`` and the job's ServerApp client certificate for
        ``serverapp_user``, signed by this CA."""
        with tempfile.TemporaryDirectory(prefix="fleet-tls-") as folder:
            authority = self._authority(Path(folder))
            pair = authority.issue_server(Path(folder), name, hosts, validity=SERVER_VALIDITY)
            serverapp = authority.issue_operator(Path(folder), "serverapp", SERVER_VALIDITY, user=serverapp_user)
            return TlsMaterial(
                ca=self.certificate,
                certificate=pair.certificate.read_text(),
                key=pair.key.read_text(),
                serverapp_certificate=serverapp.certificate.read_text(),
                serverapp_key=serverapp.key.read_text(),
            )

    def issue_operator(self) -> tuple[str, str]:
        """The controller's client certificate and key (`fleet.hub.OPERATOR_USER`)."""
        with tempfile.TemporaryDirectory(prefix="fleet-operator-") as folder:
            pair = self._authority(Path(folder)).issue_operator(Path(folder), validity=OPERATOR_VALIDITY)
            return pair.certificate.read_text(), pair.key.read_text()

    def _authority(self, folder: Path) -> CertificateAuthority:
        from cryptography import x509

        from fleet.federation.certificates import CertificateAuthority

        certificate = x509.load_pem_x509_certificate(self.certificate.encode())
        return CertificateAuthority(certificate, self._private_key, folder / "ca.pem")

    @functools.cached_property
    def _private_key(self) -> rsa.RSAPrivateKey:
        # Loaded once: cryptography checks an RSA-3072 key for consistency as it loads it (~140 ms), which every
        # job's certificates would pay again.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = serialization.load_pem_private_key(self.key.encode(), None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ApiError(
                0,
                f"the hub CA secret {CONTROLLER_NAMESPACE}/{HUB_CA_SECRET}: expected an RSA key in PKCS #1, the "
                "one form OCM's add-on CSR signer reads; replace the Secret (delete it: the controller makes one)",
            )
        return key


@dataclass(frozen=True)
class Credentials:
    """What the controller presents to a job's SuperLink: the hub CA (to verify it) and its own client
    certificate and key (PEM)."""

    ca: str
    certificate: str
    key: str


def load_or_create_operator(
    client: HubClient, ca: HubCA, now: datetime.datetime, namespace: str = CONTROLLER_NAMESPACE
) -> Credentials:
    """The controller's operator certificate from its Secret; issued (and the Secret created or replaced) when
    there is none, when it is not the current hub CA's, or when less than a fifth of its life is left."""
    secret = client.get(SECRET, namespace, OPERATOR_SECRET)
    if secret is not None:
        data = secret.get("data") or {}
        try:
            found = Credentials(
                ca.certificate,
                base64.b64decode(data["tls.crt"]).decode(),
                base64.b64decode(data["tls.key"]).decode(),
            )
        except (KeyError, ValueError):
            found = None
        if found is not None and still_good(found.certificate, ca.certificate, now):
            return found
    certificate, key = ca.issue_operator()
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": OPERATOR_SECRET,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "fleet", "app.kubernetes.io/component": "operator-identity"},
        },
        "data": {
            "tls.crt": base64.b64encode(certificate.encode()).decode(),
            "tls.key": base64.b64encode(key.encode()).decode(),
            "ca.crt": base64.b64encode(ca.certificate.encode()).decode(),
        },
    }
    client.apply(SECRET, body)
    return Credentials(ca.certificate, certificate, key)


def still_good(certificate_pem: str, ca_pem: str, now: datetime.datetime) -> bool:
    """Whether a client certificate is the CA's and has more than a fifth of its life left at ``now``."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
        certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem.encode()))
    except (ValueError, TypeError, InvalidSignature):
        return False
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return start <= now and (end - now) > (end - start) / 5


def load_or_create_hub_ca(client: HubClient, namespace: str = CONTROLLER_NAMESPACE) -> HubCA:
    """The hub CA from its Secret; made and stored first when there is none (another writer may win the race:
    then its CA is used)."""
    secret = client.get(SECRET, namespace, HUB_CA_SECRET)
    if secret is None:
        from fleet.federation.certificates import CertificateAuthority

        with tempfile.TemporaryDirectory(prefix="fleet-ca-") as folder:
            authority = CertificateAuthority.create(Path(folder), "fleet hub CA", validity=HUB_CA_VALIDITY)
            certificate = authority.path.read_text()
            key = (Path(folder) / "ca.key").read_text()
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": HUB_CA_SECRET,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "fleet", "app.kubernetes.io/component": "hub-ca"},
            },
            "data": {
                "tls.crt": base64.b64encode(certificate.encode()).decode(),
                "tls.key": base64.b64encode(key.encode()).decode(),
            },
        }
        try:
            client.create(SECRET, body)
            return HubCA(certificate, key)
        except TransientError as error:
            if error.status != 409:
                raise
        secret = client.get(SECRET, namespace, HUB_CA_SECRET)
        if secret is None:
            raise TransientError(0, f"the hub CA secret {namespace}/{HUB_CA_SECRET} vanished while being created")
    data = secret.get("data") or {}
    try:
        return HubCA(
            base64.b64decode(data["tls.crt"]).decode(),
            base64.b64decode(data["tls.key"]).decode(),
        )
    except (KeyError, ValueError) as error:
        raise ApiError(
            0,
            f"secret {namespace}/{HUB_CA_SECRET}: expected tls.crt and tls.key holding the hub CA ({error})",
        ) from error
