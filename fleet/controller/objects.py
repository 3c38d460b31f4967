"""The objects the controller keeps on the hub and the spokes for one job, as pure builders.

Per job, in the job's namespace on the hub (each owned by the FederatedLearning resource, so that
Kubernetes' garbage collector removes them with it even when the controller is down):
- ``<job>-superlink-tls``: the SuperLink's server certificate, signed by the hub CA
  (`fleet.hub.HUB_CA_SECRET`);
- ``<job>-superlink``: the SuperLink Deployment (TLS, the model storage mounted, a progress sidecar) and a
  ClusterIP Service of the same name, through which the controller submits and follows the run;
- one Service per listener (``<job>-listener-<name>``; NodePort, LoadBalancer, or ClusterIP behind a Route
  or an Ingress of the same name): how collaborators reach the SuperLink from their clusters;
- the model PersistentVolumeClaim (PVC storage; S3 storage passes the bucket settings instead).

Per selected cluster, in the cluster's namespace: the ManifestWork ``fl-<namespace>-<job>`` carrying the
collaborator (a SuperNode Deployment whose ClientApp reads the data path the cluster claims, authenticated
with the cluster's add-on registration certificate) and the hub CA bundle, with status feedback on the
Deployment's available replicas and progress. ManifestWorks cannot be owned across namespaces: the finalizer
removes them.

Every object carries `DESIRED_HASH` (a hash of its desired content), so that the controller changes an
object only when what it wants differs from what it last wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet.claims import API_GROUP
from fleet.crd import KIND, PLURAL, VERSION
from fleet.hub import (
    ADDON_INSTALL_NAMESPACE,
    CLIENT_CERT_SECRET,
    CONTROLLER_NAME,
    DATA_ROOT,
    DATA_VOLUME_CLAIM,
    DATASET_LABEL,
    JOB_LABEL,
    SUPERNODE_KEY_TO_OPENSSH,
)
from fleet.models import FederatedLearningSpec, Listener, ListenerType, StorageType

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
PROGRESS_PORT = 8080
"""The progress sidecar: serves the ServerApp's progress.jsonl from the model storage, read-only."""
HEALTH_PORT = 8081


_TLS_DIR = "/var/run/fleet/tls"
_CA_DIR = "/var/run/fleet/ca"
_CERT_DIR = "/var/run/fleet/client"
_AUTH_DIR = "/var/run/fleet/auth"
_AUTH_KEY = f"{_AUTH_DIR}/supernode.key"
_NON_ROOT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_LOCKED_DOWN: dict[str, Any] = {
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

OWNED_KINDS = (SECRET, DEPLOYMENT, SERVICE, PVC, ROUTE, INGRESS, MANIFEST_WORK)
"""What the controller creates, in the order it creates them (a Deployment's Secret and claim first)."""
KINDS_BY_NAME = {k.kind: k for k in (FEDERATED_LEARNING, *OWNED_KINDS, PLACEMENT_DECISION, MANAGED_CLUSTER)}


@dataclass(frozen=True)
class JobRef:
    """The FederatedLearning resource the objects belong to."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class TlsMaterial:
    """PEM texts: the hub CA certificate, and the SuperLink's certificate and key signed by it."""

    ca: str
    certificate: str
    key: str


@dataclass(frozen=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str


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


def superlink_name(job: JobRef) -> str:
    return dns_name(job.name, "superlink")


def tls_secret_name(job: JobRef) -> str:
    return dns_name(job.name, "superlink-tls", limit=253)


def listener_name(job: JobRef, listener: Listener) -> str:
    return dns_name(job.name, "listener", listener.name)


def work_name(job: JobRef) -> str:
    return dns_name("fl", job.namespace, job.name, limit=253)


def collaborator_name(job: JobRef) -> str:
    return dns_name("fl", job.namespace, job.name)


def internal_address(job: JobRef) -> str:
    """The SuperLink's address inside the hub: where the controller submits the run."""
    return f"{superlink_name(job)}.{job.namespace}.svc:{SUPERLINK_PORT}"


def progress_url(job: JobRef) -> str:
    return f"http://{superlink_name(job)}.{job.namespace}.svc:{PROGRESS_PORT}/progress"


def model_dir(spec: FederatedLearningSpec, job: JobRef) -> str:
    storage = spec.server.storage
    if storage.type is StorageType.PVC and storage.path:
        return storage.path
    return f"/models/{job.name}"


def model_path(spec: FederatedLearningSpec, job: JobRef) -> str:
    """Where the ServerApp writes the final model (as ``fleet run`` does: ``<model dir>/model.pt``)."""
    storage = spec.server.storage
    if storage.type is StorageType.S3 and storage.s3 is not None:
        prefix = storage.s3.prefix.strip("/")
        return f"s3://{storage.s3.bucket_name}/{prefix + '/' if prefix else ''}model.pt"
    return f"{model_dir(spec, job)}/model.pt"


def server_hosts(spec: FederatedLearningSpec, job: JobRef, node_host: str = "") -> tuple[str, ...]:
    """The names the SuperLink's certificate must be valid for."""
    service = superlink_name(job)
    hosts = [service, f"{service}.{job.namespace}", f"{service}.{job.namespace}.svc"]
    hosts += [f"{listener_name(job, listener)}.{job.namespace}.svc" for listener in spec.server.listeners]
    hosts += [listener.host for listener in spec.server.listeners if listener.host]
    if node_host:
        hosts.append(node_host)
    return tuple(dict.fromkeys(hosts))


# --- the hub side -------------------------------------------------------------------------------------------


def federation_objects(
    spec: FederatedLearningSpec, job: JobRef, tls: TlsMaterial | None, *, replicas: int
) -> list[dict[str, Any]]:
    """The hub objects of the job's federation; ``tls`` is None when the job says ``tls: false`` or when the
    certificate is not made yet (then the Deployment waits for it)."""
    objects: list[dict[str, Any]] = []
    if tls is not None:
        objects.append(_tls_secret(job, tls))
    storage = spec.server.storage
    if storage.type is StorageType.PVC and storage.name and storage.size is not None:
        objects.append(
            _hub_object(
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
    if not spec.tls or tls is not None:
        objects.append(_superlink_deployment(spec, job, replicas))
    objects.append(
        _hub_object(
            SERVICE,
            job,
            superlink_name(job),
            "superlink",
            {
                "spec": {
                    "type": "ClusterIP",
                    "selector": _superlink_labels(job),
                    "ports": [
                        {"name": "fleet", "port": SUPERLINK_PORT, "targetPort": "fleet", "protocol": "TCP"},
                        {
                            "name": "progress",
                            "port": PROGRESS_PORT,
                            "targetPort": "progress",
                            "protocol": "TCP",
                        },
                    ],
                }
            },
        )
    )
    for listener in spec.server.listeners:
        objects.extend(_listener_objects(job, listener))
    return [with_hash(o) for o in objects]


def _tls_secret(job: JobRef, tls: TlsMaterial) -> dict[str, Any]:
    data = {"tls.crt": tls.certificate, "tls.key": tls.key, "ca.crt": tls.ca}
    return _hub_object(
        SECRET,
        job,
        tls_secret_name(job),
        "superlink",
        {
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


def _superlink_labels(job: JobRef) -> dict[str, str]:
    return {JOB_LABEL: job.name, COMPONENT_LABEL: "superlink"}


def _superlink_deployment(spec: FederatedLearningSpec, job: JobRef, replicas: int) -> dict[str, Any]:
    directory = model_dir(spec, job)
    args = ["--host=0.0.0.0", f"--port={SUPERLINK_PORT}", f"--health-server-address=0.0.0.0:{HEALTH_PORT}"]
    args += ["--disable-runtime-dependency-installation", f"--database={directory}/superlink.db"]
    mounts: list[dict[str, Any]] = [
        {"name": "model", "mountPath": directory},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    if spec.tls:
        args += [f"--ssl-ca-certfile={_TLS_DIR}/ca.crt", f"--ssl-certfile={_TLS_DIR}/tls.crt"]
        args += [f"--ssl-keyfile={_TLS_DIR}/tls.key", "--enable-supernode-auth"]
        mounts.append({"name": "tls", "mountPath": _TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": tls_secret_name(job), "defaultMode": 0o440}})
    else:
        args.append("--insecure")
    storage = spec.server.storage
    env: list[dict[str, Any]] = []
    if storage.type is StorageType.PVC and storage.name:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": storage.name}})
    else:
        volumes.append({"name": "model", "emptyDir": {}})
        if storage.s3 is not None:
            env += [
                {"name": "FLEET_S3_BUCKET", "value": storage.s3.bucket_name},
                {"name": "FLEET_S3_PREFIX", "value": storage.s3.prefix},
                {"name": "FLEET_S3_REGION", "value": storage.s3.region},
            ]
    labels = _superlink_labels(job)
    superlink = {
        "name": "superlink",
        "image": spec.server.image,
        "command": ["flower-superlink"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "fleet", "containerPort": SUPERLINK_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 5},
        "livenessProbe": {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 20, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "securityContext": _LOCKED_DOWN,
        "volumeMounts": mounts,
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
        "securityContext": _LOCKED_DOWN,
        "volumeMounts": [{"name": "model", "mountPath": directory, "readOnly": True}],
    }
    return _hub_object(
        DEPLOYMENT,
        job,
        superlink_name(job),
        "superlink",
        {
            "spec": {
                "replicas": replicas,
                # One SuperLink per job, never two at once: its state is in the model storage.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": _NON_ROOT,
                        "containers": [superlink, sidecar],
                        "volumes": volumes,
                    },
                },
            }
        },
    )


def _listener_objects(job: JobRef, listener: Listener) -> list[dict[str, Any]]:
    name = listener_name(job, listener)
    port: dict[str, Any] = {"name": "fleet", "targetPort": "fleet", "protocol": "TCP"}
    if listener.type is ListenerType.NODE_PORT:
        service_type, port = "NodePort", {**port, "port": SUPERLINK_PORT, "nodePort": listener.port}
    elif listener.type is ListenerType.LOAD_BALANCER:
        service_type, port = "LoadBalancer", {**port, "port": listener.port}
    else:
        service_type, port = "ClusterIP", {**port, "port": SUPERLINK_PORT}
    service = _hub_object(
        SERVICE,
        job,
        name,
        "listener",
        {"spec": {"type": service_type, "selector": _superlink_labels(job), "ports": [port]}},
    )
    objects = [service]
    if listener.type is ListenerType.ROUTE:
        # TLS passes through to the SuperLink: collaborators verify its hub-signed certificate end to end.
        objects.append(
            _hub_object(
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
            _hub_object(
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


def _hub_object(kind: Kind, job: JobRef, name: str, component: str, body: dict[str, Any]) -> dict[str, Any]:
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
    superlink_address: str,
    ca_pem: str,
) -> dict[str, Any]:
    """The ManifestWork running the job's collaborator on ``cluster``."""
    name = collaborator_name(job)
    labels = {
        JOB_LABEL: job.name,
        JOB_NAMESPACE_LABEL: job.namespace,
        COMPONENT_LABEL: "collaborator",
        DATASET_LABEL: spec.dataset,
    }
    ca_config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-ca"[:253], "namespace": ADDON_INSTALL_NAMESPACE, "labels": labels},
        "data": {"ca.crt": ca_pem},
    }
    work = {
        "apiVersion": MANIFEST_WORK.api_version,
        "kind": MANIFEST_WORK.kind,
        "metadata": {"name": work_name(job), "namespace": cluster, "labels": _labels(job, "collaborator")},
        "spec": {
            "workload": {
                "manifests": [
                    ca_config_map,
                    _supernode(spec, name, labels, cluster, data_path, superlink_address, ca_config_map),
                ]
            },
            "deleteOption": {"propagationPolicy": "Foreground"},
            "manifestConfigs": [
                {
                    "resourceIdentifier": {
                        "group": "apps",
                        "resource": "deployments",
                        "namespace": ADDON_INSTALL_NAMESPACE,
                        "name": name,
                    },
                    "feedbackRules": [
                        {"type": "WellKnownStatus"},
                        {
                            "type": "JSONPaths",
                            "jsonPaths": [
                                {
                                    "name": "ProgressingReason",
                                    "path": '.conditions[?(@.type=="Progressing")].reason',
                                },
                                {
                                    "name": "ProgressingMessage",
                                    "path": '.conditions[?(@.type=="Progressing")].message',
                                },
                            ],
                        },
                    ],
                }
            ],
        },
    }
    return with_hash(work)


def _supernode(
    spec: FederatedLearningSpec,
    name: str,
    labels: dict[str, str],
    cluster: str,
    data_path: str,
    superlink_address: str,
    ca_config_map: dict[str, Any],
) -> dict[str, Any]:
    node_config = f"data-path={json.dumps(data_path)} cluster-name={json.dumps(cluster)}"
    args = [f"--superlink={superlink_address}", f"--node-config={node_config}", "--isolation=subprocess"]
    args.append(f"--health-server-address=0.0.0.0:{HEALTH_PORT}")
    mounts = [
        {"name": "data", "mountPath": DATA_ROOT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": DATA_VOLUME_CLAIM, "readOnly": True}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    init_containers: list[dict[str, Any]] = []
    if spec.tls:
        args += [f"--root-certificates={_CA_DIR}/ca.crt", f"--auth-supernode-private-key={_AUTH_KEY}"]
        mounts += [
            {"name": "ca", "mountPath": _CA_DIR, "readOnly": True},
            {"name": "auth", "mountPath": _AUTH_DIR, "readOnly": True},
        ]
        volumes += [
            {"name": "ca", "configMap": {"name": ca_config_map["metadata"]["name"]}},
            {"name": "client-certificate", "secret": {"secretName": CLIENT_CERT_SECRET}},
            {"name": "auth", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ]
        init_containers.append(
            {
                "name": "auth-key",
                "image": spec.client.image,
                "command": ["python", "-c", SUPERNODE_KEY_TO_OPENSSH, f"{_CERT_DIR}/tls.key", _AUTH_KEY],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                "securityContext": _LOCKED_DOWN,
                "volumeMounts": [
                    {"name": "client-certificate", "mountPath": _CERT_DIR, "readOnly": True},
                    {"name": "auth", "mountPath": _AUTH_DIR},
                ],
            }
        )
    else:
        args.append("--insecure")
    wanted = spec.client.resources
    requests: dict[str, str] = {}
    if wanted.cpu.value > 0:
        requests["cpu"] = str(wanted.cpu)
    if wanted.memory.value > 0:
        requests["memory"] = str(wanted.memory)
    resources: dict[str, Any] = {"requests": requests} if requests else {}
    if wanted.gpu:
        resources["limits"] = {"nvidia.com/gpu": str(wanted.gpu)}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # a collaborator never talks to a Kubernetes API
        "securityContext": _NON_ROOT,
        "containers": [
            {
                "name": "supernode",
                "image": spec.client.image,
                "command": ["flower-supernode"],
                "args": args,
                "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
                "readinessProbe": {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 10},
                "resources": resources,
                "securityContext": _LOCKED_DOWN,
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ADDON_INSTALL_NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            # A collaborator that cannot start within this (an image that cannot be pulled, a missing
            # secret) turns the Deployment's Progressing condition False, which the status feedback carries.
            "progressDeadlineSeconds": 300,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
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
