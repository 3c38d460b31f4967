"""OpenFL as a fleet runtime: OpenFL 1.9's own aggregator on the hub, one OpenFL collaborator per placed cluster, over
OpenFL's mutual TLS with the hub CA.

Locally the run is `fleet.federation.openfl_runtime.OpenFLRun`. On the hub, per job:
- ``<job>-aggregator-plan`` (ConfigMap): the job's OpenFL plan (`fleet.app_openfl.plan`: ``plan.yaml``,
  ``cols.yaml`` listing each placed cluster's registration subject, the common name OpenFL checks);
- ``<job>-aggregator-keys`` (ConfigMap): each collaborator's admitted key digests (`fleet.app_openfl.launcher`:
  the add-on signer signs any name for any cluster, so the name alone proves nothing);
- ``<job>-aggregator`` (Deployment): an init container making the initial model (``fx plan initialize``), the
  aggregator (``fx aggregator start``, through fleet's launcher) on the port its collaborators dial, and the
  progress sidecar; and its Service.
The workspace is an emptyDir with the plan and a projected ``cert/`` volume mounted where OpenFL looks
(``cert/cert_chain.crt``, ``cert/server/agg_<address>.crt``), so no certificate is copied anywhere.

Per cluster, its ManifestWork: the hub CA, the plan with the cluster's own ``data.yaml`` line (its claimed data path),
and a Deployment running ``fx collaborator start -n <its registration subject>`` presenting its registration
certificate (``cert/client/col_<subject>.crt``).

OpenFL hashes the whole plan into the federation's id and refuses a collaborator whose plan differs, so both sides
get the same document, naming the address collaborators dial; the aggregator listens on that port. The initial
model is built for 28x28 images (`HUB_INPUT_SIDE`): the hub has no data to read the shape from.

There is no run to submit: the aggregator runs its plan from its start, and rounds begin as collaborators ask for
work; the run id is always 1. Stopping is scaling the aggregator down.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from fleet.app_openfl.launcher import ALLOWED_KEYS_ENV
from fleet.app_openfl.plan import (
    PlanSettings,
    client_certificate,
    collaborators_document,
    data_document,
    plan_document,
    server_certificate,
)
from fleet.hub import APP_IMAGE, DATA_ROOT, DATA_VOLUME_CLAIM
from fleet.models import FederatedLearningSpec, Framework, Job, StorageType

if TYPE_CHECKING:
    from fleet.controller.hub import Credentials
    from fleet.controller.objects import JobRef, TlsMaterial
    from fleet.controller.runs import RunBackend
    from fleet.federation.local import LocalRun

HUB_INPUT_SIDE = 28
"""The side of the images an OpenFL job's initial model is built for on the hub (MNIST's)."""
PROGRESS_IMAGE = APP_IMAGE
"""The progress sidecar's image: fleet's app image (OpenFL's holds only what OpenFL's processes import)."""
RUN_ID = 1
_WORKSPACE = "/workspace"
_CLIENTS_DIR = "/var/run/fleet/clients"
_KEYS_FILE = "allowed-keys.json"
_LAUNCHER = ["python", "-m", "fleet.app_openfl.launcher", f"--workspace={_WORKSPACE}"]
_PLAN_FILES = ("plan.yaml", "cols.yaml", "data.yaml")


def plan_name(job: JobRef) -> str:
    from fleet.controller.objects import dns_name

    return dns_name(job.name, job.aggregator, "plan", limit=253)


def keys_name(job: JobRef) -> str:
    from fleet.controller.objects import dns_name

    return dns_name(job.name, job.aggregator, "keys", limit=253)


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host, int(port)


def plan_files(spec: FederatedLearningSpec, job: JobRef, address: str, collaborators: list[str]) -> dict[str, str]:
    """``plan.yaml`` and ``cols.yaml`` of the job: the same text for the aggregator and every collaborator;
    ``address``: where the collaborators dial the aggregator (its in-hub Service while no listener has one)."""
    from fleet.controller.objects import internal_address, model_dir

    host, port = split_address(address or internal_address(job))
    host = host.lower()  # OpenFL looks for its certificate as cert/server/agg_<lower-case address>.crt
    training = spec.training
    settings = PlanSettings(
        rounds=spec.server.rounds,
        min_available_clients=spec.server.min_available_clients,
        strategy=training.strategy.value,
        local_epochs=training.local_epochs,
        learning_rate=training.learning_rate,
        batch_size=training.batch_size,
        proximal_mu=training.proximal_mu,
        round_timeout_seconds=training.round_timeout_seconds,
        tls=spec.tls,
        address=host,
        port=port,
        model_dir=model_dir(spec, job),
        input_side=HUB_INPUT_SIDE,
    )
    return {
        "plan.yaml": yaml.safe_dump(plan_document(settings), sort_keys=False),
        "cols.yaml": yaml.safe_dump(collaborators_document(sorted(collaborators)), sort_keys=False),
    }


@dataclass(frozen=True)
class OpenFLRunBackend:
    """The controller's side of an OpenFL run: nothing to submit or ask; the aggregator's progress tells."""

    def submit(
        self,
        job: JobRef,
        spec: FederatedLearningSpec,
        model_dir: str,
        credentials: Credentials | None,
        resume: Mapping[str, str | int] | None = None,
    ) -> int:
        # The aggregator's Deployment holds the plan: it runs from the pod's start.
        return RUN_ID

    def failure(self, job: JobRef, run_id: int, credentials: Credentials | None) -> str | None:
        # OpenFL has no API to ask; the aggregator writes a failed event, and its Deployment's status tells the rest.
        return None

    def stop(self, job: JobRef, run_id: int, credentials: Credentials | None) -> None:
        return None  # the phase machine scales the aggregator down


@dataclass(frozen=True)
class OpenFLRuntime:
    framework: Framework = Framework.OPENFL
    aggregator: str = "aggregator"
    registers_keys: bool = False

    def local_run(self) -> type[LocalRun]:
        from fleet.federation.openfl_runtime import OpenFLRun

        return OpenFLRun

    def run_backend(self) -> RunBackend:
        return OpenFLRunBackend()

    def plan_notes(self, job: Job) -> tuple[str, ...]:
        return (
            f"framework: openfl: the hub runs OpenFL 1.9's aggregator ({job.name}-{self.aggregator}, listening on "
            f"the port of the first listener with an address) and one OpenFL collaborator per selected cluster, "
            f"admitted by its registration certificate and key; the initial model is built for "
            f"{HUB_INPUT_SIDE}x{HUB_INPUT_SIDE} images, and a cluster placed after the aggregator started restarts it "
            "(OpenFL reads its collaborators once)",
        )

    # --- the hub --------------------------------------------------------------------------------------------

    def aggregator_objects(
        self,
        spec: FederatedLearningSpec,
        job: JobRef,
        tls: TlsMaterial | None,
        *,
        replicas: int,
        collaborators: Mapping[str, str],
        client_keys: Mapping[str, str],
        address: str,
    ) -> list[dict[str, Any]]:
        from fleet.controller.objects import CONFIG_MAP, aggregator_service, hub_object

        # A round waits for every collaborator the plan lists: only those the hub vouches for (with TLS) are listed.
        admitted = {u: c for u, c in collaborators.items() if not spec.tls or c in client_keys}
        files = plan_files(spec, job, address, list(admitted))
        files["data.yaml"] = ""  # the aggregator reads no data
        objects = [hub_object(CONFIG_MAP, job, plan_name(job), job.aggregator, {"data": files})]
        if spec.tls:
            keys = {user: [client_keys[c]] for user, c in sorted(admitted.items())}
            document = json.dumps(keys, indent=2, sort_keys=True) + "\n"
            objects.append(
                hub_object(CONFIG_MAP, job, keys_name(job), job.aggregator, {"data": {_KEYS_FILE: document}})
            )
        if not spec.tls or tls is not None:
            objects.append(self._deployment(spec, job, replicas, tls, address, files))
        objects.append(aggregator_service(job))
        return objects

    def _deployment(
        self,
        spec: FederatedLearningSpec,
        job: JobRef,
        replicas: int,
        tls: TlsMaterial | None,
        address: str,
        files: Mapping[str, str],
    ) -> dict[str, Any]:
        from fleet.controller.objects import (
            DEPLOYMENT,
            LOCKED_DOWN,
            PROGRESS_PORT,
            aggregator_labels,
            aggregator_name,
            certificate_annotation,
            hub_object,
            internal_address,
            model_dir,
            tls_secret_name,
        )

        host, port = split_address(address or internal_address(job))
        host = host.lower()
        directory = model_dir(spec, job)
        workspace = [
            {"name": "workspace", "mountPath": _WORKSPACE},
            {"name": "plan", "mountPath": f"{_WORKSPACE}/plan", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        volumes: list[dict[str, Any]] = [
            {"name": "workspace", "emptyDir": {"sizeLimit": "2Gi"}},
            {"name": "plan", "configMap": {"name": plan_name(job)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ]
        mounts = [*workspace, {"name": "model", "mountPath": directory}]
        env: list[dict[str, str]] = [{"name": "HOME", "value": "/tmp"}]
        if spec.tls:
            certificate, key = server_certificate(host)
            volumes += [
                {
                    "name": "cert",
                    "projected": {
                        "defaultMode": 0o440,
                        "sources": [
                            {
                                "secret": {
                                    "name": tls_secret_name(job),
                                    "items": [
                                        {"key": "ca.crt", "path": "cert_chain.crt"},
                                        {"key": "tls.crt", "path": certificate.removeprefix("cert/")},
                                        {"key": "tls.key", "path": key.removeprefix("cert/")},
                                    ],
                                }
                            }
                        ],
                    },
                },
                {"name": "clients", "configMap": {"name": keys_name(job)}},
            ]
            mounts += [
                {"name": "cert", "mountPath": f"{_WORKSPACE}/cert", "readOnly": True},
                {"name": "clients", "mountPath": _CLIENTS_DIR, "readOnly": True},
            ]
            env.append({"name": ALLOWED_KEYS_ENV, "value": f"{_CLIENTS_DIR}/{_KEYS_FILE}"})
        storage = spec.server.storage
        if storage.type is StorageType.PVC and storage.name:
            volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": storage.name}})
        else:
            volumes.append({"name": "model", "emptyDir": {}})
        initialize = {
            "name": "initialize",
            "image": spec.server.image,
            "command": [*_LAUNCHER, "plan", "initialize"],
            "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
            "securityContext": LOCKED_DOWN,
            "volumeMounts": workspace,
        }
        aggregator = {
            "name": "aggregator",
            "image": spec.server.image,
            "command": [*_LAUNCHER, "aggregator", "start"],
            "env": env,
            "ports": [{"name": "fleet", "containerPort": port, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": "fleet"}, "periodSeconds": 5},
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
            "securityContext": LOCKED_DOWN,
            "volumeMounts": mounts,
        }
        sidecar = {
            "name": "progress",
            "image": PROGRESS_IMAGE,
            "command": ["python", "-m", "fleet.controller.progress", f"--directory={directory}"],
            "args": [f"--port={PROGRESS_PORT}"],
            "ports": [{"name": "progress", "containerPort": PROGRESS_PORT, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}},
            "securityContext": LOCKED_DOWN,
            "volumeMounts": [{"name": "model", "mountPath": directory, "readOnly": True}],
        }
        labels = aggregator_labels(job)
        # OpenFL reads its plan once, at start: a changed plan (a collaborator placed, the address moved) or a
        # re-issued certificate replaces the pod.
        template_annotations = {
            **certificate_annotation(tls).get("annotations", {}),
            "fleet.dev/plan": _digest(files),
        }
        return hub_object(
            DEPLOYMENT,
            job,
            aggregator_name(job),
            job.aggregator,
            {
                "spec": {
                    "replicas": replicas,
                    "strategy": {"type": "Recreate"},
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels, "annotations": template_annotations},
                        "spec": {
                            "automountServiceAccountToken": False,
                            "securityContext": _pod_security(port),
                            "initContainers": [initialize],
                            "containers": [aggregator, sidecar],
                            "volumes": volumes,
                        },
                    },
                }
            },
        )

    def collaborator_manifests(
        self,
        spec: FederatedLearningSpec,
        job: JobRef,
        cluster: str,
        *,
        data_path: str,
        address: str,
        ca_pem: str,
        client_key: str | None,
        user: str,
        collaborators: tuple[str, ...],
    ) -> list[dict[str, Any]]:
        from fleet.controller.objects import (
            CLIENT_KEY_ANNOTATION,
            LOCKED_DOWN,
            ca_config_map,
            collaborator_deployment,
            collaborator_labels,
            collaborator_name,
            collaborator_resources,
        )
        from fleet.hub import ADDON_INSTALL_NAMESPACE, CLIENT_CERT_SECRET

        name = collaborator_name(job)
        labels = collaborator_labels(spec, job)
        ca = ca_config_map(spec, job, ca_pem)
        files = plan_files(spec, job, address, list(collaborators))
        files["data.yaml"] = data_document({user: data_path})
        plan: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-plan"[:253], "namespace": ADDON_INSTALL_NAMESPACE, "labels": labels},
            "data": files,
        }
        mounts = [
            {"name": "workspace", "mountPath": _WORKSPACE},
            {"name": "plan", "mountPath": f"{_WORKSPACE}/plan", "readOnly": True},
            {"name": "data", "mountPath": DATA_ROOT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        volumes: list[dict[str, Any]] = [
            {"name": "workspace", "emptyDir": {"sizeLimit": "2Gi"}},
            {"name": "plan", "configMap": {"name": plan["metadata"]["name"]}},
            {"name": "data", "persistentVolumeClaim": {"claimName": DATA_VOLUME_CLAIM, "readOnly": True}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ]
        if spec.tls:
            certificate, key = client_certificate(user)
            volumes.append(
                {
                    "name": "cert",
                    "projected": {
                        "defaultMode": 0o440,
                        "sources": [
                            {
                                "configMap": {
                                    "name": ca["metadata"]["name"],
                                    "items": [{"key": "ca.crt", "path": "cert_chain.crt"}],
                                }
                            },
                            {
                                "secret": {
                                    "name": CLIENT_CERT_SECRET,
                                    "items": [
                                        {"key": "tls.crt", "path": certificate.removeprefix("cert/")},
                                        {"key": "tls.key", "path": key.removeprefix("cert/")},
                                    ],
                                }
                            },
                        ],
                    },
                }
            )
            mounts.append({"name": "cert", "mountPath": f"{_WORKSPACE}/cert", "readOnly": True})
        container = {
            "name": "collaborator",
            "image": spec.client.image,
            "command": [*_LAUNCHER, "collaborator", "start", "-n", user],
            "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": collaborator_resources(spec),
            "securityContext": LOCKED_DOWN,
            "volumeMounts": mounts,
        }
        annotations = {"fleet.dev/plan": _digest(files)}
        if client_key:
            annotations[CLIENT_KEY_ANNOTATION] = client_key  # a renewed registration key replaces the pod
        deployment = collaborator_deployment(name, labels, [container], volumes, annotations=annotations)
        return [ca, plan, deployment]


def _pod_security(port: int) -> dict[str, Any]:
    """Non-root; below 1024 (a Route's or an Ingress's 443), the pod's own network namespace lets an unprivileged
    process bind from that port on (a safe sysctl since Kubernetes 1.22: no node setting needed)."""
    from fleet.controller.objects import NON_ROOT

    if port >= 1024:
        return NON_ROOT
    return {**NON_ROOT, "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": str(port)}]}


def _digest(files: Mapping[str, str]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(dict(files), sort_keys=True).encode()).hexdigest()[:16]


OPENFL = OpenFLRuntime()
