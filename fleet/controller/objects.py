"""The objects the controller keeps on the hub and the spokes for one job, as pure builders.

What every job has is built here: its TLS Secret, its model volume, its listeners, the ManifestWork around each
collaborator. What runs the aggregator and the collaborators comes from the job's runtime (`fleet.runtimes`):
OpenFL's in `fleet.runtimes.openfl`, Flower's here (`flower_aggregator_objects`, `flower_collaborator_manifests`),
described below.

Per job, in the job's namespace on the hub (each owned by the FederatedLearning resource, so that
Kubernetes' garbage collector removes them with it even when the controller is down):
- ``<job>-superlink-tls``: the SuperLink's server certificate (valid for the names collaborators, the controller
  and the pod itself dial; issued again, and the SuperLink's pod replaced, when a listener's address is not among
  them) and the job's ServerApp client certificate, signed by the hub CA
  (`fleet.hub.HUB_CA_SECRET`);
- ``<job>-clients``: the SuperLink's allow-list of client certificates (`fleet.federation.flower_launcher`): the
  controller, the job's ServerApp, and the add-on registration subject of each cluster placed for the job;
- ``<job>-superlink``: the SuperLink Deployment and a ClusterIP Service of the same name, through which the
  controller submits and follows the run. The pod runs Flower's SuperLink through fleet's launcher (mutual TLS)
  with ``--isolation process``, fleet's executor forking the ServerApp with the job's ServerApp certificate
  (Flower's own SuperExec could present none), and a progress sidecar;
- one Service per listener (``<job>-listener-<name>``; NodePort, LoadBalancer, or ClusterIP behind a Route
  or an Ingress of the same name): how collaborators reach the SuperLink from their clusters;
- the model PersistentVolumeClaim (PVC storage; with S3 storage the aggregator gets the bucket and the keys of the
  Secret the job names, `fleet.app.storage.s3_environment`).

Per selected cluster, in the cluster's namespace: the ManifestWork ``fl-<namespace>-<job>`` carrying the hub CA
bundle and the collaborator: a SuperNode Deployment, started through fleet's launcher, whose ClientApp reads the
data path the cluster claims, presenting the cluster's add-on registration certificate and signing with its key
(the key the controller registered: the pod is replaced when OCM renews it), with status feedback on the
Deployment's available replicas and progress. ManifestWorks cannot be owned across namespaces: the finalizer
removes them.

Every object carries `DESIRED_HASH` (a hash of its desired content), so that the controller changes an
object only when what it wants differs from what it last wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet.app.storage import MANIFEST, S3Location, hub_run_name, run_folder, s3_environment
from fleet.claims import API_GROUP
from fleet.crd import KIND, PLURAL, VERSION
from fleet.federation.flower_launcher import ALLOWED_CLIENTS, CLIENT_CA, CLIENT_CERT, CLIENT_KEY
from fleet.hub import (
    ADDON_INSTALL_NAMESPACE,
    AGGREGATOR_SERVICE_COMPONENT,
    CLIENT_CERT_SECRET,
    CONTROLLER_NAME,
    DATA_ROOT,
    DATA_VOLUME_CLAIM,
    DATASET_LABEL,
    JOB_LABEL,
    OPERATOR_USER,
    collaborator_user,
)
from fleet.models import AGGREGATOR_POD_PORT, FederatedLearningSpec, Listener, ListenerType, StorageType

if TYPE_CHECKING:
    from fleet.runtimes import Runtime

JOB_NAMESPACE_LABEL = "fleet.dev/job-namespace"
"""The job's hub namespace, on objects that live elsewhere (ManifestWorks in cluster namespaces)."""
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
DESIRED_HASH = "fleet.dev/desired-hash"
RUN_ID_ANNOTATION = f"{API_GROUP}/run-id"
"""The Flower run id, on the FederatedLearning resource once submitted: a restarted controller never submits
twice."""
PLACEMENT_LABEL = "cluster.open-cluster-management.io/placement"

SUPERLINK_PORT = 9092
"""The SuperLink's one HTTPS port (Fleet, Control and Runtime APIs, Flower 1.41)."""
PROGRESS_PORT = AGGREGATOR_POD_PORT
"""The progress sidecar: serves the ServerApp's progress.jsonl from the model storage, read-only."""
HEALTH_PORT = 8081
RUNTIME_PORT = 9094
"""A SuperNode's own Runtime API, for the ClientApps of its pod only (loopback; Flower's default, made explicit)."""
LOCAL_SUPERLINK = f"127.0.0.1:{SUPERLINK_PORT}"
"""Where the executor in the SuperLink's pod reaches it: the server certificate names 127.0.0.1 too."""
CLIENTS_FILE = "allowed-clients.json"
COLLABORATOR_PROGRESS_DEADLINE = 300
"""Seconds a collaborator Deployment may take to become available before its Progressing condition turns False
(ProgressDeadlineExceeded), which the job reads through the ManifestWork's status feedback."""
PROGRESSING_REASON = "ProgressingReason"
PROGRESSING_MESSAGE = "ProgressingMessage"
_PROGRESSING = '.status.conditions[?(@.type=="Progressing")]'
"""JSONPaths of status feedback: the work agent evaluates them from the object's root (ocm
``pkg/work/spoke/statusfeedback/reader.go``: ``FindResults(obj.UnstructuredContent())``)."""
SERVER_NAMES_ANNOTATION = "fleet.dev/server-names"
"""On the SuperLink's TLS Secret: the names its certificate is valid for, so that a reconcile sees without parsing
it when a listener's address is no longer among them (the certificate is issued again)."""
SERVER_CERTIFICATE_ANNOTATION = "fleet.dev/server-certificate"
"""On the SuperLink's pod template: a digest of its server certificate. Flower reads the certificate once, at
start: a certificate issued again replaces the pod."""
INGRESS_CLASS = "nginx"
"""The IngressClass of an Ingress listener: ingress-nginx's default, whose ``ssl-passthrough`` annotation the
listener needs (honoured only by a controller started with ``--enable-ssl-passthrough``)."""
EXTERNAL_DNS_HOSTNAME = "external-dns.alpha.kubernetes.io/hostname"
"""On a LoadBalancer listener's Service with a host: the name external-dns publishes for its address."""
CLIENT_KEY_ANNOTATION = "fleet.dev/client-key"
"""On a collaborator's pod template: the SHA-256 of the registration key the job's SuperLink knows for the
cluster (`identity.key_digest`); a renewed key changes it, which replaces the pod."""
LAUNCHER = ["python", "-m", "fleet.federation.flower_launcher"]
SUPERNODE_KEY_PROGRAM = (
    # Flower reads a SuperNode's authentication key in OpenSSH format; the registration secret holds PEM. With
    # argv[3], the key must be the one the hub registered: after a renewal the kubelet may not have the new
    # Secret yet, and an init container that exits non-zero is retried.
    "import hashlib, sys\n"
    "from cryptography.hazmat.primitives import serialization as s\n"
    "key = s.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)\n"
    "public = key.public_key().public_bytes(s.Encoding.OpenSSH, s.PublicFormat.OpenSSH).strip()\n"
    "held, wanted = hashlib.sha256(public).hexdigest(), sys.argv[3] if len(sys.argv) > 3 else ''\n"
    "if wanted and held != wanted:\n"
    "    sys.exit(f'the registration secret holds key {held}, the hub registered {wanted}: waiting for it')\n"
    "ssh = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.NoEncryption())\n"
    "open(sys.argv[2], 'wb').write(ssh)\n"
)
"""A Python program (``python -c``) converting the registration key (argv[1]) to OpenSSH (argv[2])."""


_TLS_DIR = "/var/run/fleet/tls"
_SERVERAPP_DIR = "/var/run/fleet/serverapp"
_CLIENTS_DIR = "/var/run/fleet/clients"
_CA_DIR = "/var/run/fleet/ca"
_CERT_DIR = "/var/run/fleet/client"
_AUTH_DIR = "/var/run/fleet/auth"
_AUTH_KEY = f"{_AUTH_DIR}/supernode.key"
NON_ROOT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
LOCKED_DOWN: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


FEDERATED_LEARNING = Kind(API_GROUP, VERSION, PLURAL, KIND)
DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
SERVICE = Kind("", "v1", "services", "Service")
SECRET = Kind("", "v1", "secrets", "Secret")
CONFIG_MAP = Kind("", "v1", "configmaps", "ConfigMap")
PVC = Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
ROUTE = Kind("route.openshift.io", "v1", "routes", "Route")
INGRESS = Kind("networking.k8s.io", "v1", "ingresses", "Ingress")
MANIFEST_WORK = Kind("work.open-cluster-management.io", "v1", "manifestworks", "ManifestWork")
PLACEMENT_DECISION = Kind("cluster.open-cluster-management.io", "v1beta1", "placementdecisions", "PlacementDecision")
MANAGED_CLUSTER = Kind("cluster.open-cluster-management.io", "v1", "managedclusters", "ManagedCluster", False)
EVENT = Kind("", "v1", "events", "Event")
NAMESPACE = Kind("", "v1", "namespaces", "Namespace", False)
CSR = Kind("certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest", False)
"""The add-on registrations' CSRs: their signed certificates hold the collaborators' authentication keys."""
CSR_CLUSTER_LABEL = "open-cluster-management.io/cluster-name"
CSR_ADDON_LABEL = "open-cluster-management.io/addon-name"
MANAGED_CLUSTER_ADDON = Kind(
    "addon.open-cluster-management.io", "v1alpha1", "managedclusteraddons", "ManagedClusterAddOn"
)
"""Read for the subject the hub gives each cluster's collaborator registration (``status.registrations``)."""

OWNED_KINDS = (SECRET, CONFIG_MAP, DEPLOYMENT, SERVICE, PVC, ROUTE, INGRESS, MANIFEST_WORK)
"""What the controller creates, in the order it creates them (a Deployment's Secret, allow-list and claim
first)."""
KINDS_BY_NAME = {k.kind: k for k in (FEDERATED_LEARNING, *OWNED_KINDS, PLACEMENT_DECISION, MANAGED_CLUSTER)}


@dataclass(frozen=True)
class JobRef:
    """The FederatedLearning resource the objects belong to."""

    name: str
    namespace: str
    uid: str
    aggregator: str = field(default_factory=lambda: _default_runtime().aggregator)
    """What the job's runtime calls its aggregator (`fleet.runtimes.Runtime.aggregator`): the hub objects' names
    and component label say it (``<job>-superlink`` for Flower, ``<job>-aggregator`` for OpenFL); the default
    framework's when not given."""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM texts: the hub CA certificate, the SuperLink's certificate and key, and the job's ServerApp client
    certificate and key (`fleet.hub.serverapp_user`), signed by it."""

    ca: str
    certificate: str
    key: str
    serverapp_certificate: str
    serverapp_key: str
    hosts: tuple[str, ...] = ()
    """The names the SuperLink's certificate is valid for (`server_hosts`)."""


@dataclass(frozen=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str


def _default_runtime() -> Runtime:
    from fleet.runtimes import DEFAULT_FRAMEWORK, runtime_for

    return runtime_for(DEFAULT_FRAMEWORK)


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj["metadata"]
    return ObjectKey(obj["kind"], metadata.get("namespace", ""), metadata["name"])


def dns_name(*parts: str, limit: int = 63) -> str:
    """``parts`` joined with '-', cut to ``limit`` characters with a short hash keeping it unique."""
    name = "-".join(parts)
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def aggregator_name(job: JobRef) -> str:
    return dns_name(job.name, job.aggregator)


def tls_secret_name(job: JobRef) -> str:
    return dns_name(job.name, f"{job.aggregator}-tls", limit=253)


def clients_name(job: JobRef) -> str:
    return dns_name(job.name, "clients", limit=253)


def listener_name(job: JobRef, listener: Listener) -> str:
    return dns_name(job.name, "listener", listener.name)


def work_name(job: JobRef) -> str:
    return dns_name("fl", job.namespace, job.name, limit=253)


def collaborator_name(job: JobRef) -> str:
    return dns_name("fl", job.namespace, job.name)


def internal_address(job: JobRef) -> str:
    """The SuperLink's address inside the hub: where the controller submits the run."""
    return f"{aggregator_name(job)}.{job.namespace}.svc:{SUPERLINK_PORT}"


def progress_url(job: JobRef) -> str:
    return f"http://{aggregator_name(job)}.{job.namespace}.svc:{PROGRESS_PORT}/progress"


def model_dir(spec: FederatedLearningSpec, job: JobRef) -> str:
    storage = spec.server.storage
    if storage.type is StorageType.PVC and storage.path:
        return storage.path
    return f"/models/{job.name}"


def model_path(spec: FederatedLearningSpec, job: JobRef, run: int | None = None) -> str:
    """Where the final model is: ``<model dir>/model.pt`` (as ``fleet run`` writes it), or with S3 storage the
    run's object, which the ServerApp publishes (`fleet.app.storage`) before it reports completion."""
    storage = spec.server.storage
    if storage.type is StorageType.S3 and storage.s3 is not None:
        s3 = storage.s3
        location = S3Location.at(s3.bucket_name, s3.prefix, s3.region, s3.endpoint)
        return location.url(MANIFEST if run is None else f"{run_folder(hub_run_name(run))}/model.pt")
    return f"{model_dir(spec, job)}/model.pt"


def server_hosts(spec: FederatedLearningSpec, job: JobRef, addresses: Iterable[str] = ()) -> tuple[str, ...]:
    """The names the SuperLink's certificate must be valid for: its Services, its listeners' hosts and known
    ``addresses`` (``host:port``, from `observe.listener_statuses`: a node's, a load balancer's), and 127.0.0.1,
    where the executor in its own pod dials it (`LOCAL_SUPERLINK`) with the host name checked."""
    service = aggregator_name(job)
    hosts = [service, f"{service}.{job.namespace}", f"{service}.{job.namespace}.svc", "127.0.0.1"]
    hosts += [f"{listener_name(job, listener)}.{job.namespace}.svc" for listener in spec.server.listeners]
    hosts += [listener.host for listener in spec.server.listeners if listener.host]
    hosts += [address.rpartition(":")[0] for address in addresses if address]
    return tuple(dict.fromkeys(hosts))


# --- the hub side -------------------------------------------------------------------------------------------


def allowed_clients(job: JobRef, collaborators: Mapping[str, str]) -> dict[str, Any]:
    """The allow-list `fleet.federation.flower_launcher` reads: the controller and the job's ServerApp as
    operators, and ``collaborators`` (registration subject -> cluster)."""
    from fleet.hub import serverapp_user

    return {
        "operators": sorted([OPERATOR_USER, serverapp_user(job.namespace, job.name)]),
        "collaborators": dict(sorted(collaborators.items())),
    }


def federation_objects(
    spec: FederatedLearningSpec,
    job: JobRef,
    tls: TlsMaterial | None,
    *,
    replicas: int,
    collaborators: Mapping[str, str] | None = None,
    client_keys: Mapping[str, str] | None = None,
    address: str = "",
) -> list[dict[str, Any]]:
    """The hub objects of the job's federation: what every job has (its TLS Secret, its model volume, its
    listeners) and its runtime's aggregator (`fleet.runtimes.Runtime.aggregator_objects`). ``tls`` is None when
    the job says ``tls: false`` or when the certificate is not made yet (then the Deployment waits for it);
    ``collaborators``: the registration subject of each cluster placed for the job -> the cluster;
    ``client_keys``: cluster -> its key's digest; ``address``: where collaborators reach the aggregator."""
    from fleet.runtimes import runtime_for

    objects: list[dict[str, Any]] = []
    if tls is not None:
        objects.append(_tls_secret(job, tls))
    storage = spec.server.storage
    if storage.type is StorageType.PVC and storage.name and storage.size is not None:
        objects.append(
            hub_object(
                PVC,
                job,
                storage.name,
                "model-storage",
                {
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": str(storage.size)}},
                    }
                },
            )
        )
    objects += runtime_for(spec.framework).aggregator_objects(
        spec,
        job,
        tls,
        replicas=replicas,
        collaborators=collaborators or {},
        client_keys=client_keys or {},
        address=address,
    )
    for listener in spec.server.listeners:
        objects.extend(_listener_objects(job, listener))
    return [with_hash(o) for o in objects]


def flower_aggregator_objects(
    spec: FederatedLearningSpec,
    job: JobRef,
    tls: TlsMaterial | None,
    *,
    replicas: int,
    collaborators: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Flower's aggregator on the hub: the SuperLink's allow-list, its Deployment and its in-hub Service."""
    objects: list[dict[str, Any]] = []
    if spec.tls:
        document = json.dumps(allowed_clients(job, collaborators), indent=2) + "\n"
        objects.append(hub_object(CONFIG_MAP, job, clients_name(job), "superlink", {"data": {CLIENTS_FILE: document}}))
    if not spec.tls or tls is not None:
        objects.append(_superlink_deployment(spec, job, replicas, tls))
    objects.append(aggregator_service(job))
    return objects


def aggregator_service(job: JobRef) -> dict[str, Any]:
    """The aggregator's in-hub Service: its ``fleet`` port (the controller's way in, and the listeners' target)
    and the progress sidecar's."""
    return hub_object(
        SERVICE,
        job,
        aggregator_name(job),
        AGGREGATOR_SERVICE_COMPONENT,
        {
            "spec": {
                "type": "ClusterIP",
                "selector": aggregator_labels(job),
                "ports": [
                    {"name": "fleet", "port": SUPERLINK_PORT, "targetPort": "fleet", "protocol": "TCP"},
                    {"name": "progress", "port": PROGRESS_PORT, "targetPort": "progress", "protocol": "TCP"},
                ],
            }
        },
    )


def _tls_secret(job: JobRef, tls: TlsMaterial) -> dict[str, Any]:
    data = {
        "tls.crt": tls.certificate,
        "tls.key": tls.key,
        "ca.crt": tls.ca,
        "serverapp.crt": tls.serverapp_certificate,
        "serverapp.key": tls.serverapp_key,
    }
    return hub_object(
        SECRET,
        job,
        tls_secret_name(job),
        job.aggregator,
        {
            "metadata": {"annotations": {SERVER_NAMES_ANNOTATION: ",".join(tls.hosts)}},
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


# The SuperLink's database (runs, nodes and their public keys) sits on the job's volume, so a replaced pod resumes
# from it, but as a dot-file (SQLite's journal beside it is one too): S3 gets the run's output, never this state.
SUPERLINK_STATE = ".superlink.db"


def aggregator_labels(job: JobRef) -> dict[str, str]:
    return {JOB_LABEL: job.name, COMPONENT_LABEL: job.aggregator}


def _superlink_deployment(
    spec: FederatedLearningSpec, job: JobRef, replicas: int, tls: TlsMaterial | None
) -> dict[str, Any]:
    directory = model_dir(spec, job)
    args = ["--host=0.0.0.0", f"--port={SUPERLINK_PORT}", f"--health-server-address=0.0.0.0:{HEALTH_PORT}"]
    args += ["--disable-runtime-dependency-installation", f"--database={directory}/{SUPERLINK_STATE}"]
    # The executor container, not Flower's SuperExec, starts the ServerApp: its connection presents the job's
    # ServerApp certificate, which a process Flower starts cannot.
    args.append("--isolation=process")
    mounts: list[dict[str, Any]] = [
        {"name": "model", "mountPath": directory},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    executor_mounts: list[dict[str, Any]] = [
        {"name": "model", "mountPath": directory},
        {"name": "executor-tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "executor-tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    env: list[dict[str, Any]] = []
    executor_args = [f"--serve=flwr-serverapp={LOCAL_SUPERLINK}"]
    executor_env: list[dict[str, Any]] = []
    if spec.tls:
        command = [*LAUNCHER, "superlink"]
        args += [f"--ssl-ca-certfile={_TLS_DIR}/ca.crt", f"--ssl-certfile={_TLS_DIR}/tls.crt"]
        args += [f"--ssl-keyfile={_TLS_DIR}/tls.key", "--enable-supernode-auth"]
        # Client certificates must chain to the hub CA and be on the job's allow-list (re-read as it changes).
        env += [
            {"name": CLIENT_CA, "value": f"{_TLS_DIR}/ca.crt"},
            {"name": ALLOWED_CLIENTS, "value": f"{_CLIENTS_DIR}/{CLIENTS_FILE}"},
        ]
        mounts += [
            {"name": "tls", "mountPath": _TLS_DIR, "readOnly": True},
            {"name": "clients", "mountPath": _CLIENTS_DIR, "readOnly": True},
        ]
        executor_args.append(f"--root-certificates={_SERVERAPP_DIR}/ca.crt")
        executor_env += [
            {"name": CLIENT_CERT, "value": f"{_SERVERAPP_DIR}/tls.crt"},
            {"name": CLIENT_KEY, "value": f"{_SERVERAPP_DIR}/tls.key"},
        ]
        executor_mounts.append({"name": "serverapp", "mountPath": _SERVERAPP_DIR, "readOnly": True})
        secret = tls_secret_name(job)
        # Each container sees only its own key: the SuperLink its server key, the executor the ServerApp's.
        volumes += [
            {"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440, "items": _items("ca", "tls")}},
            {
                "name": "serverapp",
                "secret": {"secretName": secret, "defaultMode": 0o440, "items": _items("ca", "serverapp")},
            },
            {"name": "clients", "configMap": {"name": clients_name(job)}},
        ]
    else:
        command = ["flower-superlink"]
        args.append("--insecure")
    storage = spec.server.storage
    if storage.type is StorageType.PVC and storage.name:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": storage.name}})
    else:
        volumes.append({"name": "model", "emptyDir": {}})
        if storage.s3 is not None:
            s3 = storage.s3
            location = S3Location.at(s3.bucket_name, s3.prefix, s3.region, s3.endpoint)
            executor_env += s3_environment(location, s3.credentials_secret)
    labels = aggregator_labels(job)
    superlink = {
        "name": "superlink",
        "image": spec.server.image,
        "command": command,
        "args": args,
        "env": env,
        "ports": [
            {"name": "fleet", "containerPort": SUPERLINK_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 5},
        "livenessProbe": {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 20, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        "securityContext": LOCKED_DOWN,
        "volumeMounts": mounts,
    }
    # The ServerApp runs here (aggregation, the model): the larger share of the pod's resources.
    executor = {
        "name": "executor",
        "image": spec.server.image,
        "command": ["python", "-m", "fleet.federation.executor"],
        "args": executor_args,
        "env": executor_env,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "securityContext": LOCKED_DOWN,
        "volumeMounts": executor_mounts,
    }
    sidecar = {
        "name": "progress",
        "image": spec.server.image,
        "command": ["python", "-m", "fleet.controller.progress", f"--directory={directory}"],
        "args": [f"--port={PROGRESS_PORT}"],
        "ports": [{"name": "progress", "containerPort": PROGRESS_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"cpu": "100m", "memory": "128Mi"},
        },
        "securityContext": LOCKED_DOWN,
        "volumeMounts": [{"name": "model", "mountPath": directory, "readOnly": True}],
    }
    return hub_object(
        DEPLOYMENT,
        job,
        aggregator_name(job),
        "superlink",
        {
            "spec": {
                "replicas": replicas,
                # One SuperLink per job, never two at once: its state is in the model storage.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels, **certificate_annotation(tls)},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": NON_ROOT,
                        "containers": [superlink, executor, sidecar],
                        "volumes": volumes,
                    },
                },
            }
        },
    )


def certificate_annotation(tls: TlsMaterial | None) -> dict[str, Any]:
    if tls is None:
        return {}
    digest = hashlib.sha256(tls.certificate.encode()).hexdigest()[:16]
    return {"annotations": {SERVER_CERTIFICATE_ANNOTATION: digest}}


def _items(*pairs: str) -> list[dict[str, str]]:
    """Secret keys mounted under the names the processes read: ``ca`` -> ca.crt, ``<x>`` -> tls.crt, tls.key."""
    items = []
    for pair in pairs:
        if pair == "ca":
            items.append({"key": "ca.crt", "path": "ca.crt"})
        else:
            key_prefix = "tls" if pair == "tls" else pair
            items += [
                {"key": f"{key_prefix}.crt", "path": "tls.crt"},
                {"key": f"{key_prefix}.key", "path": "tls.key"},
            ]
    return items


def _listener_objects(job: JobRef, listener: Listener) -> list[dict[str, Any]]:
    name = listener_name(job, listener)
    port: dict[str, Any] = {"name": "fleet", "targetPort": "fleet", "protocol": "TCP"}
    if listener.type is ListenerType.NODE_PORT:
        service_type, port = "NodePort", {**port, "port": SUPERLINK_PORT, "nodePort": listener.port}
    elif listener.type is ListenerType.LOAD_BALANCER:
        service_type, port = "LoadBalancer", {**port, "port": listener.port}
    else:
        service_type, port = "ClusterIP", {**port, "port": SUPERLINK_PORT}
    body: dict[str, Any] = {"spec": {"type": service_type, "selector": aggregator_labels(job), "ports": [port]}}
    if listener.type is ListenerType.LOAD_BALANCER and listener.host:
        body["metadata"] = {"annotations": {EXTERNAL_DNS_HOSTNAME: listener.host}}
    service = hub_object(SERVICE, job, name, "listener", body)
    objects = [service]
    if listener.type is ListenerType.ROUTE:
        # TLS passes through to the SuperLink: collaborators verify its hub-signed certificate end to end.
        objects.append(
            hub_object(
                ROUTE,
                job,
                name,
                "listener",
                {
                    "spec": {
                        "host": listener.host,
                        "to": {"kind": "Service", "name": name, "weight": 100},
                        "port": {"targetPort": "fleet"},
                        "tls": {"termination": "passthrough"},
                    }
                },
            )
        )
    elif listener.type is ListenerType.INGRESS:
        objects.append(
            hub_object(
                INGRESS,
                job,
                name,
                "listener",
                {
                    "metadata": {
                        "annotations": {
                            "nginx.ingress.kubernetes.io/ssl-passthrough": "true",
                            "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
                        }
                    },
                    "spec": {
                        "ingressClassName": INGRESS_CLASS,
                        "tls": [{"hosts": [listener.host]}],
                        "rules": [
                            {
                                "host": listener.host,
                                "http": {
                                    "paths": [
                                        {
                                            "path": "/",
                                            "pathType": "Prefix",
                                            "backend": {"service": {"name": name, "port": {"name": "fleet"}}},
                                        }
                                    ]
                                },
                            }
                        ],
                    },
                },
            )
        )
    return objects


def hub_object(kind: Kind, job: JobRef, name: str, component: str, body: dict[str, Any]) -> dict[str, Any]:
    extra_metadata = body.pop("metadata", {})
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {
            "name": name,
            "namespace": job.namespace,
            "labels": _labels(job, component),
            **extra_metadata,
            "ownerReferences": [
                {
                    "apiVersion": FEDERATED_LEARNING.api_version,
                    "kind": FEDERATED_LEARNING.kind,
                    "name": job.name,
                    "uid": job.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        **body,
    }


def _labels(job: JobRef, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "fleet",
        MANAGED_BY_LABEL: CONTROLLER_NAME,
        COMPONENT_LABEL: component,
        JOB_LABEL: job.name,
        JOB_NAMESPACE_LABEL: job.namespace,
    }


# --- the spoke side -----------------------------------------------------------------------------------------


def collaborator_work(
    spec: FederatedLearningSpec,
    job: JobRef,
    cluster: str,
    data_path: str,
    aggregator_address: str,
    ca_pem: str,
    client_key: str | None = None,
    *,
    user: str = "",
    collaborators: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The ManifestWork running the job's collaborator on ``cluster`` (`fleet.runtimes.Runtime.collaborator_manifests`),
    with the hub CA it verifies the aggregator against; ``client_key``: the digest of the cluster's registration key
    the hub knows (None while it has seen no certificate of the cluster's); ``user``: the cluster's registration
    subject; ``collaborators``: the subjects of every cluster placed for the job."""
    from fleet.runtimes import runtime_for

    manifests = runtime_for(spec.framework).collaborator_manifests(
        spec,
        job,
        cluster,
        data_path=data_path,
        address=aggregator_address,
        ca_pem=ca_pem,
        client_key=client_key,
        user=user or collaborator_user(cluster),
        collaborators=collaborators,
    )
    work = {
        "apiVersion": MANIFEST_WORK.api_version,
        "kind": MANIFEST_WORK.kind,
        "metadata": {"name": work_name(job), "namespace": cluster, "labels": _labels(job, "collaborator")},
        "spec": {
            "workload": {"manifests": manifests},
            "deleteOption": {"propagationPolicy": "Foreground"},
            "manifestConfigs": [
                {
                    "resourceIdentifier": {
                        "group": "apps",
                        "resource": "deployments",
                        "namespace": ADDON_INSTALL_NAMESPACE,
                        "name": collaborator_name(job),
                    },
                    "feedbackRules": [
                        {"type": "WellKnownStatus"},
                        {
                            "type": "JSONPaths",
                            "jsonPaths": [
                                {"name": PROGRESSING_REASON, "path": f"{_PROGRESSING}.reason"},
                                {"name": PROGRESSING_MESSAGE, "path": f"{_PROGRESSING}.message"},
                            ],
                        },
                    ],
                }
            ],
        },
    }
    return with_hash(work)


def collaborator_labels(spec: FederatedLearningSpec, job: JobRef) -> dict[str, str]:
    """The labels of a collaborator's objects on its cluster."""
    return {
        JOB_LABEL: job.name,
        JOB_NAMESPACE_LABEL: job.namespace,
        COMPONENT_LABEL: "collaborator",
        DATASET_LABEL: spec.dataset,
    }


def ca_config_map(spec: FederatedLearningSpec, job: JobRef, ca_pem: str) -> dict[str, Any]:
    """The hub CA bundle on the collaborator's cluster: what it verifies the aggregator's certificate against."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{collaborator_name(job)}-ca"[:253],
            "namespace": ADDON_INSTALL_NAMESPACE,
            "labels": collaborator_labels(spec, job),
        },
        "data": {"ca.crt": ca_pem},
    }


def collaborator_resources(spec: FederatedLearningSpec) -> dict[str, Any]:
    """A collaborator container's resources: the job's per-client requests, a GPU as a limit (the device plugin's
    resource is requested through its limit)."""
    wanted = spec.client.resources
    requests: dict[str, str] = {}
    if wanted.cpu.value > 0:
        requests["cpu"] = str(wanted.cpu)
    if wanted.memory.value > 0:
        requests["memory"] = str(wanted.memory)
    resources: dict[str, Any] = {"requests": requests} if requests else {}
    if wanted.gpu:
        resources["limits"] = {"nvidia.com/gpu": str(wanted.gpu)}
    return resources


def flower_collaborator_manifests(
    spec: FederatedLearningSpec,
    job: JobRef,
    cluster: str,
    data_path: str,
    superlink_address: str,
    ca_pem: str,
    client_key: str | None,
) -> list[dict[str, Any]]:
    """Flower's collaborator: the hub CA bundle and a SuperNode Deployment."""
    ca = ca_config_map(spec, job, ca_pem)
    labels = collaborator_labels(spec, job)
    name = collaborator_name(job)
    return [ca, _supernode(spec, name, labels, cluster, data_path, superlink_address, ca, client_key)]


def _supernode(
    spec: FederatedLearningSpec,
    name: str,
    labels: dict[str, str],
    cluster: str,
    data_path: str,
    superlink_address: str,
    ca_config_map: dict[str, Any],
    client_key: str | None,
) -> dict[str, Any]:
    node_config = f"data-path={json.dumps(data_path)} cluster-name={json.dumps(cluster)}"
    args = [f"--superlink={superlink_address}", f"--node-config={node_config}", "--isolation=subprocess"]
    args += [f"--health-server-address=0.0.0.0:{HEALTH_PORT}", "--host=127.0.0.1", f"--port={RUNTIME_PORT}"]
    mounts = [
        {"name": "data", "mountPath": DATA_ROOT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": DATA_VOLUME_CLAIM, "readOnly": True}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    init_containers: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []
    annotations: dict[str, str] = {}
    if spec.tls:
        command = [*LAUNCHER, "supernode"]
        args += [f"--root-certificates={_CA_DIR}/ca.crt", f"--auth-supernode-private-key={_AUTH_KEY}"]
        # The add-on registration certificate: presented at the TLS handshake, its key signs Flower's requests.
        env += [
            {"name": CLIENT_CERT, "value": f"{_CERT_DIR}/tls.crt"},
            {"name": CLIENT_KEY, "value": f"{_CERT_DIR}/tls.key"},
        ]
        mounts += [
            {"name": "ca", "mountPath": _CA_DIR, "readOnly": True},
            {"name": "auth", "mountPath": _AUTH_DIR, "readOnly": True},
            {"name": "client-certificate", "mountPath": _CERT_DIR, "readOnly": True},
        ]
        volumes += [
            {"name": "ca", "configMap": {"name": ca_config_map["metadata"]["name"]}},
            {"name": "client-certificate", "secret": {"secretName": CLIENT_CERT_SECRET}},
            {"name": "auth", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ]
        key_args = [f"{_CERT_DIR}/tls.key", _AUTH_KEY]
        if client_key:
            key_args.append(client_key)
            annotations[CLIENT_KEY_ANNOTATION] = client_key
        init_containers.append(
            {
                "name": "auth-key",
                "image": spec.client.image,
                "command": ["python", "-c", SUPERNODE_KEY_PROGRAM, *key_args],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                "securityContext": LOCKED_DOWN,
                "volumeMounts": [
                    {"name": "client-certificate", "mountPath": _CERT_DIR, "readOnly": True},
                    {"name": "auth", "mountPath": _AUTH_DIR},
                ],
            }
        )
    else:
        command = ["flower-supernode"]
        args.append("--insecure")
    resources = collaborator_resources(spec)
    container: dict[str, Any] = {
        "name": "supernode",
        "image": spec.client.image,
        "command": command,
        "args": args,
        "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "readinessProbe": {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 10},
        "resources": resources,
        "securityContext": LOCKED_DOWN,
        "volumeMounts": mounts,
    }
    if env:
        container["env"] = env
    return collaborator_deployment(name, labels, [container], volumes, init_containers, annotations)


def collaborator_deployment(
    name: str,
    labels: dict[str, str],
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    init_containers: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A collaborator's Deployment on its cluster, whatever its runtime: one replica at a time, non-root, no API
    token; ``annotations`` on its pod template (a change replaces the pod)."""
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # a collaborator never talks to a Kubernetes API
        "securityContext": NON_ROOT,
        "containers": containers,
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    template_metadata: dict[str, Any] = {"labels": labels}
    if annotations:
        template_metadata["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ADDON_INSTALL_NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            # A collaborator that cannot start within this (an image that cannot be pulled, a missing
            # secret) turns the Deployment's Progressing condition False, which the status feedback carries.
            "progressDeadlineSeconds": COLLABORATOR_PROGRESS_DEADLINE,
            # One collaborator per cluster at a time: after a key renewal the old one's key is not admitted.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


# --- hashing ------------------------------------------------------------------------------------------------


def desired_hash(obj: Mapping[str, Any]) -> str:
    """A hash of what the controller wants of ``obj`` (its hash annotation left out)."""
    content = json.loads(json.dumps(obj))
    annotations = content.get("metadata", {}).get("annotations", {})
    annotations.pop(DESIRED_HASH, None)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.setdefault("metadata", {})
    metadata.setdefault("annotations", {})[DESIRED_HASH] = desired_hash(obj)
    return obj
