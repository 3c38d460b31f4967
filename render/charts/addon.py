"""The ``addon/`` folder: the collaborator add-on, which gives each managed cluster its hub-signed identity.

One design: the add-on exists for its registration, and its agent only reports whether that identity is usable.
The federated-learning workloads are not the add-on's: the controller runs one SuperNode per job and cluster
through ManifestWorks (`fleet.controller.objects.collaborator_work`), each carrying the hub CA bundle it verifies
the job's SuperLink against, presenting this registration's certificate and signing with its key.

OCM's add-on manager installs the agent from the AddOnTemplate on every cluster that has the add-on's
ManagedClusterAddOn (rendered per cluster under ``clusters/``; the install strategy is Manual). The template
registers the agent with a CustomSigner: the klusterlet makes a key and a CSR, the add-on manager signs it with
the CA in ``fleet.hub.HUB_CA_SECRET`` (a ``kubernetes.io/tls`` Secret in ``fleet.hub.CONTROLLER_NAMESPACE``,
RSA in PKCS #1, made by the controller; ``controller/`` renders the Role that lets the add-on manager read it),
and the signed certificate lands in the Secret `fleet.hub.CLIENT_CERT_SECRET` of the install namespace. The
agent (`fleet.addon_agent`) turns ready only while that Secret holds a usable certificate for this cluster,
which is what makes the ManagedClusterAddOn Available (the template add-on's health prober watches its
Deployments' availability).

Template variables are written ``{{NAME}}`` (OCM's template syntax: plain string substitution); the agent uses
only the built-in ``CLUSTER_NAME``.
"""

from __future__ import annotations

from typing import Any

import fleet
from fleet.hub import (
    ADDON_INSTALL_NAMESPACE,
    ADDON_NAME,
    ADDON_SIGNER,
    APP_IMAGE,
    CLIENT_CERT_SECRET,
    CONTROLLER_NAMESPACE,
    HUB_CA_SECRET,
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
HEALTH_PORT = 8081

_CERT_DIR = "/var/run/fleet/client"


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
                "description": "A hub-signed identity for federated-learning collaborators: the certificate "
                "every job's SuperNode on this cluster presents to the job's SuperLink.",
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
        manifests=[_namespace(), _agent(collaborator_image(repository))],
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


def _agent(image: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": ADDON_NAME, "app.kubernetes.io/part-of": "fleet"}
    probe = {"httpGet": {"path": "/readyz", "port": "health"}, "periodSeconds": 10, "timeoutSeconds": 5}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ADDON_NAME, "namespace": ADDON_INSTALL_NAMESPACE, "labels": labels},
        "spec": {
            # The add-on's health prober skips Deployments of 0 replicas: one, always.
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,  # the agent never talks to a Kubernetes API
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "agent",
                            "image": image,
                            "command": ["python", "-m", "fleet.addon_agent"],
                            "args": [
                                f"--certificate-dir={_CERT_DIR}",
                                "--cluster={{CLUSTER_NAME}}",
                                f"--port={HEALTH_PORT}",
                            ],
                            "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
                            # Ready only while the registration certificate is usable: the add-on's Available.
                            "readinessProbe": probe,
                            "livenessProbe": {**probe, "httpGet": {"path": "/healthz", "port": "health"}},
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "48Mi"},
                                "limits": {"cpu": "100m", "memory": "128Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "client-certificate", "mountPath": _CERT_DIR, "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        # Optional: the pod starts before the klusterlet has the certificate, and says so.
                        {
                            "name": "client-certificate",
                            "secret": {"secretName": CLIENT_CERT_SECRET, "optional": True},
                        },
                    ],
                },
            },
        },
    }
