"""The ``addon/`` folder: the collaborator add-on that makes a managed cluster a Flower SuperNode.

OCM's add-on manager installs the agent from the AddOnTemplate on every cluster that has the add-on's
ManagedClusterAddOn (rendered per cluster under ``clusters/``; the install strategy is Manual). The template
registers the agent with a CustomSigner: the klusterlet makes a key and a CSR, the hub signs it with the CA
in ``fleet.hub.HUB_CA_SECRET`` (a ``kubernetes.io/tls`` Secret in ``fleet.hub.CONTROLLER_NAMESPACE``:
``tls.crt``, ``tls.key`` in PKCS #8 or PKCS #1), and the signed certificate lands in a secret in the install
namespace. That key is also the SuperNode's authentication key: the SuperLink admits only collaborators the
hub vouched for.

Template variables are written ``{{NAME}}`` (OCM's template syntax: plain string substitution). Built-in
ones: ``CLUSTER_NAME`` and ``INSTALL_NAMESPACE``; the others come from the AddOnDeploymentConfig's
customizedVariables.
"""

from __future__ import annotations

from typing import Any

import fleet
from fleet.hub import (
    ADDON_INSTALL_NAMESPACE,
    ADDON_NAME,
    ADDON_SIGNER,
    CLIENT_CERT_SECRET,
    CONTROLLER_NAMESPACE,
    DATA_ROOT,
    DATA_VOLUME_CLAIM,
    HUB_CA_SECRET,
    SUPERNODE_KEY_TO_OPENSSH,
)
from fleet.repository import Repository
from render.charts.base import FleetApp, FolderChart
from render.constructs.addon_deployment_config import AddOnDeploymentConfig
from render.constructs.addon_template import AddOnTemplate
from render.constructs.cluster_management_addon import ClusterManagementAddOn

SOURCE = "render/charts/addon.py"
COMPONENT = "collaborator-addon"
ADDON_GROUP = "addon.open-cluster-management.io"
TEMPLATE_NAME = f"{ADDON_NAME}-{fleet.__version__}"
"""Versioned, so that a new release rolls out as a new template instead of mutating the one agents run."""
APP_IMAGE = f"ghcr.io/fleet-fl/fleet-app:{fleet.__version__}"
CA_BUNDLE_CONFIGMAP = HUB_CA_SECRET
"""ConfigMap (key ``ca.crt``) in the install namespace holding the hub CA certificate, which the SuperNode
verifies the SuperLink against (the CA's public half only). Nothing delivers this one yet (README, Known
limitations): the controller's per-job collaborators carry their own copy in their ManifestWork."""

SUPERLINK_ADDRESS = f"fleet-superlink.{CONTROLLER_NAMESPACE}.svc:9092"
"""Default SuperLink Fleet API address (host:port). It names the in-hub Service; a fleet whose spokes reach
the hub elsewhere sets the variable in its own AddOnDeploymentConfig (per cluster, through the
ManagedClusterAddOn's configs)."""
HEALTH_PORT = 8081

_CERT_DIR = "/var/run/fleet/client"
_CA_DIR = "/var/run/fleet/ca"
_AUTH_DIR = "/var/run/fleet/auth"
_AUTH_KEY = f"{_AUTH_DIR}/supernode.key"


def build_addon(app: FleetApp, repository: Repository) -> None:
    chart = FolderChart(app, "addon")
    ClusterManagementAddOn(
        chart,
        name=ADDON_NAME,
        component=COMPONENT,
        source=SOURCE,
        spec={
            "addOnMeta": {
                "displayName": "fleet collaborator",
                "description": "A Flower SuperNode with a hub-signed identity: makes the cluster a "
                "federated-learning collaborator that trains on its own data.",
            },
            "supportedConfigs": [
                {
                    "group": ADDON_GROUP,
                    "resource": "addontemplates",
                    "defaultConfig": {"name": TEMPLATE_NAME},
                },
                {
                    "group": ADDON_GROUP,
                    "resource": "addondeploymentconfigs",
                    "defaultConfig": {"name": ADDON_NAME, "namespace": CONTROLLER_NAMESPACE},
                },
            ],
            # Clusters holding data get a ManagedClusterAddOn each (clusters/<cluster>/): no placement here.
            "installStrategy": {"type": "Manual"},
        },
    )
    AddOnTemplate(
        chart,
        name=TEMPLATE_NAME,
        addon=ADDON_NAME,
        manifests=[_namespace(), _supernode(collaborator_image(repository))],
        registration=[
            {
                "type": "CustomSigner",
                "customSigner": {
                    "signerName": ADDON_SIGNER,
                    "signingCA": {"name": HUB_CA_SECRET, "namespace": CONTROLLER_NAMESPACE},
                    # No `subject`: OCM applies a template's subject verbatim (no variables) to every cluster,
                    # while its default subject names the cluster (`fleet.hub.collaborator_user`).
                },
            }
        ],
        component=COMPONENT,
        source=SOURCE,
    )
    AddOnDeploymentConfig(
        chart,
        name=ADDON_NAME,
        namespace=CONTROLLER_NAMESPACE,
        component=COMPONENT,
        instance=ADDON_NAME,
        source=SOURCE,
        spec={
            "agentInstallNamespace": ADDON_INSTALL_NAMESPACE,
            "customizedVariables": [
                {"name": "SUPERLINK_ADDRESS", "value": SUPERLINK_ADDRESS},
                {"name": "DATA_ROOT", "value": DATA_ROOT},
                {"name": "DATA_VOLUME_CLAIM", "value": DATA_VOLUME_CLAIM},
            ],
            # Collaborators train: keep them off control-plane nodes, on Linux workers.
            "nodePlacement": {"nodeSelector": {"kubernetes.io/os": "linux"}},
        },
    )


def collaborator_image(repository: Repository) -> str:
    """The jobs' client image when they all agree on one, else the fleet app image (which holds the
    ClientApp)."""
    images = {job.images.client for job in repository.jobs.values()}
    return images.pop() if len(images) == 1 else APP_IMAGE


def _namespace() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ADDON_INSTALL_NAMESPACE, "labels": {"app.kubernetes.io/part-of": "fleet"}},
    }


def _supernode(image: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": ADDON_NAME, "app.kubernetes.io/part-of": "fleet"}
    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    node_config = 'cluster="{{CLUSTER_NAME}}" data-root="{{DATA_ROOT}}"'
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ADDON_NAME, "namespace": ADDON_INSTALL_NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,  # the SuperNode never talks to a Kubernetes API
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [
                        {
                            "name": "auth-key",
                            "image": image,
                            "command": ["python", "-c", SUPERNODE_KEY_TO_OPENSSH, f"{_CERT_DIR}/tls.key", _AUTH_KEY],
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "32Mi"},
                                "limits": {"cpu": "200m", "memory": "128Mi"},
                            },
                            "securityContext": security,
                            "volumeMounts": [
                                {"name": "client-certificate", "mountPath": _CERT_DIR, "readOnly": True},
                                {"name": "auth", "mountPath": _AUTH_DIR},
                            ],
                        }
                    ],
                    "containers": [
                        {
                            "name": "supernode",
                            "image": image,
                            "command": ["flower-supernode"],
                            "args": [
                                "--superlink={{SUPERLINK_ADDRESS}}",
                                f"--root-certificates={_CA_DIR}/ca.crt",
                                f"--auth-supernode-private-key={_AUTH_KEY}",
                                f"--node-config={node_config}",
                                "--isolation=subprocess",
                                f"--health-server-address=0.0.0.0:{HEALTH_PORT}",
                            ],
                            "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
                            "livenessProbe": {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 20},
                            "readinessProbe": {"grpc": {"port": HEALTH_PORT}, "periodSeconds": 10},
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"cpu": "2", "memory": "4Gi"},
                            },
                            "securityContext": security,
                            "volumeMounts": [
                                {"name": "ca", "mountPath": _CA_DIR, "readOnly": True},
                                {"name": "auth", "mountPath": _AUTH_DIR, "readOnly": True},
                                {"name": "data", "mountPath": "{{DATA_ROOT}}", "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "client-certificate", "secret": {"secretName": CLIENT_CERT_SECRET}},
                        {"name": "ca", "configMap": {"name": CA_BUNDLE_CONFIGMAP}},
                        {"name": "auth", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        {
                            "name": "data",
                            "persistentVolumeClaim": {"claimName": "{{DATA_VOLUME_CLAIM}}", "readOnly": True},
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }
