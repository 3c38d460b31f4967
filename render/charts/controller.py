"""The ``controller/`` folder: what the hub needs to run this project's controller.

The FederatedLearning CustomResourceDefinition is generated from the models (`fleet.crd`), so the API server
checks exactly what the renderer writes and the controller reads. The controller's ClusterRole lists
every verb it needs and nothing more: no wildcards.
"""

from __future__ import annotations

import copy
from typing import Any

import fleet
from fleet.claims import API_GROUP
from fleet.crd import PLURAL, federated_learning_crd_spec
from fleet.hub import CONTROLLER_NAME, CONTROLLER_NAMESPACE
from fleet.repository import Repository
from render.charts.base import FleetApp, FolderChart
from render.constructs.cluster_role import ClusterRole, rule
from render.constructs.cluster_role_binding import ClusterRoleBinding
from render.constructs.custom_resource_definition import CustomResourceDefinition
from render.constructs.deployment import Deployment
from render.constructs.namespace import Namespace
from render.constructs.service_account import ServiceAccount

SOURCE = "render/charts/controller.py"
"""These objects come from no repository file: the annotation names the module that generates them."""
COMPONENT = "controller"
CONTROLLER_IMAGE = f"ghcr.io/fleet-fl/fleet-controller:{fleet.__version__}"
HEALTH_PORT = 8080
HEALTH_PATH = "/healthz"
METRICS_PORT = 9090


_READ = ["get", "list", "watch"]
_MANAGE = ["get", "list", "watch", "create", "update", "patch", "delete"]
RULES: list[dict[str, Any]] = [
    rule(API_GROUP, [PLURAL], ["get", "list", "watch", "patch", "update"]),
    rule(API_GROUP, [f"{PLURAL}/status"], ["get", "patch", "update"]),
    rule(API_GROUP, [f"{PLURAL}/finalizers"], ["update"]),
    rule("cluster.open-cluster-management.io", ["placements", "placementdecisions", "managedclusters"], _READ),
    rule("work.open-cluster-management.io", ["manifestworks"], _MANAGE),
    rule("apps", ["deployments"], _MANAGE),
    # Secrets: the hub CA and the SuperLinks' server certificates.
    rule("", ["services", "persistentvolumeclaims", "secrets", "configmaps"], _MANAGE),
    rule("route.openshift.io", ["routes"], _MANAGE),
    rule("networking.k8s.io", ["ingresses"], _MANAGE),
    rule("", ["events"], ["create", "patch"]),
    rule("", ["namespaces"], _READ),
    # Each collaborator's add-on registration CSR: its key is registered with the job's SuperLink.
    rule("certificates.k8s.io", ["certificatesigningrequests"], _READ),
    # kopf watches CRDs to know which resources are served.
    rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
]
"""The controller's permissions on the hub: exactly the verbs it uses, no wildcards."""


def build_controller(app: FleetApp, repository: Repository) -> None:
    chart = FolderChart(app, "controller")
    Namespace(chart, name=CONTROLLER_NAMESPACE, component=COMPONENT, source=SOURCE)
    CustomResourceDefinition(
        chart,
        spec=federated_learning_crd_spec(),
        component=COMPONENT,
        instance=CONTROLLER_NAME,
        source=SOURCE,
    )
    ServiceAccount(chart, name=CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE, component=COMPONENT, source=SOURCE)
    ClusterRole(chart, name=CONTROLLER_NAME, rules=copy.deepcopy(RULES), component=COMPONENT, source=SOURCE)
    ClusterRoleBinding(
        chart,
        name=CONTROLLER_NAME,
        cluster_role=CONTROLLER_NAME,
        service_account=CONTROLLER_NAME,
        namespace=CONTROLLER_NAMESPACE,
        component=COMPONENT,
        source=SOURCE,
    )
    Deployment(
        chart,
        name=CONTROLLER_NAME,
        namespace=CONTROLLER_NAMESPACE,
        spec=_controller_spec(),
        component=COMPONENT,
        source=SOURCE,
    )


def _controller_spec() -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": CONTROLLER_NAME, "app.kubernetes.io/part-of": "fleet"}
    probe = {"httpGet": {"path": HEALTH_PATH, "port": "health"}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {
        "replicas": 1,
        # One controller at a time: two would race on the same jobs while a rolling update overlaps them.
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": CONTROLLER_NAME,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "runAsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "controller",
                        "image": CONTROLLER_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["fleet", "controller"],
                        "env": [
                            {
                                "name": "POD_NAMESPACE",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                            },
                            # NodePort listeners are reached at a node's address; the controller's own node
                            # is one. Override with a stable name (a load balancer in front of the nodes).
                            {
                                "name": "FLEET_NODE_HOST",
                                "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}},
                            },
                        ],
                        "ports": [
                            {"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                        ],
                        "livenessProbe": {**probe, "initialDelaySeconds": 15, "failureThreshold": 3},
                        "readinessProbe": {**probe, "initialDelaySeconds": 5, "failureThreshold": 3},
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "256Mi"},
                            "limits": {"cpu": "1", "memory": "1Gi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        # A read-only root file system still needs somewhere for Python's temporary files.
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }
