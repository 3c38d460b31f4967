"""The ``controller/`` folder: what the hub needs to run this project's controller.

The project's CustomResourceDefinitions (FederatedLearning, ManagedClusterLabels) are generated from the models
(`fleet.crd`), so the API server checks exactly what the renderer writes and the controller reads.

Permissions: every verb the controller uses and nothing more, no wildcards, and each write only in the
namespaces where it makes that write. The ClusterRole holds reads only: kopf's cluster-wide watch streams
(one per kind, whatever the number of namespaces) and the namespace lookup of the finalizer. The writes are
in a Role per namespace, bound to the controller's ServiceAccount: the controller's own namespace (the hub CA
and operator Secrets, the collaborators' identity records), each job namespace (the job's hub objects, its
status, its Events) and each managed cluster's namespace (the collaborators' ManifestWorks). Each Role is
written beside the rest of what its namespace gets (``controller/``, ``namespaces/<namespace>/``,
``clusters/<cluster>/``), so that GitOps applies it in that folder's sync wave, once the namespace exists, and
prunes it with the namespace's last job or its cluster. The one exception is cluster-scoped by nature: Git's
labels on ManagedClusters, in a ClusterRole of their own (`CLUSTER_LABELS_RULES`), written here so that it
outlives every ManagedClusterLabels object whose finalizer needs it.

The hub CA is also the add-on's CustomSigner CA: OCM's add-on manager reads that one Secret to sign the
collaborators' registrations, through a Role of its own (`SIGNER_RULES`) bound to its ServiceAccount.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import fleet
from fleet.claims import API_GROUP
from fleet.controller.identity import record_name
from fleet.crd import LABELS_PLURAL, PLURAL, federated_learning_crd_spec, managed_cluster_labels_crd_spec
from fleet.hub import CONTROLLER_NAME, CONTROLLER_NAMESPACE, HUB_CA_SECRET, OPERATOR_SECRET
from fleet.repository import Repository
from render.charts.base import FleetApp, FolderChart
from render.constructs.cluster_role import ClusterRole, rule
from render.constructs.cluster_role_binding import ClusterRoleBinding
from render.constructs.custom_resource_definition import CustomResourceDefinition
from render.constructs.deployment import Deployment
from render.constructs.namespace import Namespace
from render.constructs.role import Role, named_rule
from render.constructs.role_binding import RoleBinding
from render.constructs.service_account import ServiceAccount

SOURCE = "render/charts/controller.py"
"""These objects come from no repository file: the annotation names the module that generates them."""
COMPONENT = "controller"
CONTROLLER_IMAGE = f"ghcr.io/fleet-fl/fleet-controller:{fleet.__version__}"
HEALTH_PORT = 8080
HEALTH_PATH = "/healthz"
METRICS_PORT = 9090


_WATCH = ["list", "watch"]
_WRITE = ["create", "patch", "delete"]  # the controller creates, merge-patches on 409, deletes; never PUTs

CLUSTER_ROLE_RULES: list[dict[str, Any]] = [
    # kopf's indices of the objects the controller owns, Secrets included, watch cluster-wide. Served namespace
    # by namespace (`fleet controller --namespace`), kopf would open a stream per kind and namespace (nine per
    # namespace: 9,000 at 1,000 clusters), and a stream refused because OCM made a cluster's namespace before
    # GitOps could write its Role is never reopened: that index would stay empty. The finalizer also lists the
    # job's ManifestWorks across the cluster namespaces. ConfigMaps: the jobs' allow-lists and the collaborators'
    # identity records.
    rule("", ["configmaps", "persistentvolumeclaims", "secrets", "services"], _WATCH),
    # A 403 while the finalizer deletes in a namespace being deleted (its RoleBinding goes first) is no
    # failure: the controller looks the namespace up to tell that from a missing Role.
    rule("", ["namespaces"], ["get"]),
    # The subject the hub gives each cluster's add-on registration (status.registrations).
    rule("addon.open-cluster-management.io", ["managedclusteraddons"], _WATCH),
    # kopf watches CRDs to know which resources are served.
    rule("apiextensions.k8s.io", ["customresourcedefinitions"], _WATCH),
    rule("apps", ["deployments"], _WATCH),
    # Each collaborator's add-on registration CSR: its certificate is recorded as the cluster's identity.
    rule("certificates.k8s.io", ["certificatesigningrequests"], _WATCH),
    # ManagedClusters: their ClusterClaims (where each dataset lies); PlacementDecisions: the jobs' clusters.
    rule("cluster.open-cluster-management.io", ["managedclusters", "placementdecisions"], _WATCH),
    # The jobs; the labels each clusters/ file declares for its ManagedCluster.
    rule(API_GROUP, [PLURAL, LABELS_PLURAL], _WATCH),
    rule("networking.k8s.io", ["ingresses"], _WATCH),
    rule("route.openshift.io", ["routes"], _WATCH),
    rule("work.open-cluster-management.io", ["manifestworks"], _WATCH),
]
"""Cluster-wide, read only; sorted by API group, then resource."""

CLUSTER_LABELS_ROLE = f"{CONTROLLER_NAME}-cluster-labels"
CLUSTER_LABELS_RULES: list[dict[str, Any]] = [
    # Server-side applies of Git's labels to ManagedClusters (cluster-scoped: no Role can hold it). Patch only:
    # never create, update (replace) or delete one.
    rule("cluster.open-cluster-management.io", ["managedclusters"], ["patch"]),
    # OCM's webhook lets a requester set or remove the cluster-set label only with create on this virtual
    # subresource, for "both the old and new ManagedClusterSet" (the ManagedClusterSet CRD's description): these
    # include OCM's own default set and sets Git no longer declares (a removed clusters/ file), so the grant
    # cannot be limited by name.
    rule("cluster.open-cluster-management.io", ["managedclustersets/join"], ["create"]),
    # kopf's finalizer and annotations on each ManagedClusterLabels object; its status.
    rule(API_GROUP, [LABELS_PLURAL, f"{LABELS_PLURAL}/status"], ["patch"]),
]
"""Cluster-wide, the only cluster-wide writes: Git's labels on ManagedClusters (`fleet.controller.cluster_labels`)."""


def controller_namespace_rules(repository: Repository) -> list[dict[str, Any]]:
    """In `CONTROLLER_NAMESPACE`: the hub CA and operator Secrets, and each cluster's identity record."""
    records = sorted(record_name(cluster) for cluster in repository.clusters)
    return [
        # A collaborator's identity record, made when the hub first signs its registration (a new object's name
        # cannot be limited), replaced on each renewal.
        rule("", ["configmaps"], ["create"]),
        *([named_rule("", ["configmaps"], records, ["patch"])] if records else []),
        # The hub CA: read at start, made once when missing; the controller's own certificate, renewed by it.
        rule("", ["secrets"], ["create"]),
        named_rule("", ["secrets"], [HUB_CA_SECRET, OPERATOR_SECRET], ["get"]),
        named_rule("", ["secrets"], [OPERATOR_SECRET], ["patch"]),
    ]


ADDON_MANAGER_ACCOUNT = "addon-manager-controller-sa"
"""OCM's add-on manager's ServiceAccount (ocm ``manifests/cluster-manager/hub/addon-manager/serviceaccount.yaml``),
whose credentials sign template add-ons' CustomSigner CSRs."""
ADDON_MANAGER_NAMESPACE = "open-cluster-management-hub"
"""Where it runs: the cluster manager's namespace (ocm ``pkg/operator/helpers/queuekey.go``:
``ClusterManagerDefaultNamespace``)."""
SIGNER_ROLE = "fleet-hub-ca-signer"
SIGNER_RULES: list[dict[str, Any]] = [
    # The AddOnTemplate CRD's signingCA: "the addon manager will not have permission to access the secret by
    # default"; it gets the Secret by name, nothing else (ocm pkg/addon/templateagent/registration.go:
    # CustomSignerWithExpiry, Secrets(namespace).Get).
    named_rule("", ["secrets"], [HUB_CA_SECRET], ["get"]),
]
"""What OCM's add-on manager may do in `CONTROLLER_NAMESPACE`: read the hub CA Secret."""

JOB_NAMESPACE_RULES: list[dict[str, Any]] = [
    # The SuperLink's allow-list, its TLS Secret, the SuperLink and listener Services, the model claim.
    rule("", ["configmaps", "persistentvolumeclaims", "secrets", "services"], _WRITE),
    # kopf posts the job's Events in the job's namespace.
    rule("", ["events"], ["create"]),
    rule("apps", ["deployments"], _WRITE),
    # kopf's finalizer and annotations, the run id annotation; the status.
    rule(API_GROUP, [PLURAL, f"{PLURAL}/status"], ["patch"]),
    # Owner references that block the owner's deletion need this where OwnerReferencesPermissionEnforcement
    # is on (OpenShift).
    rule(API_GROUP, [f"{PLURAL}/finalizers"], ["update"]),
    rule("networking.k8s.io", ["ingresses"], _WRITE),
    rule("route.openshift.io", ["routes"], _WRITE),
]
"""In each job namespace: the job's hub objects and the FederatedLearning resource itself."""

CLUSTER_NAMESPACE_RULES: list[dict[str, Any]] = [
    rule("work.open-cluster-management.io", ["manifestworks"], _WRITE),
]
"""In each managed cluster's namespace (named after the cluster): the collaborators' ManifestWorks."""


class _NamespaceFolders(FolderChart):
    """Objects under ``<folder>/<their namespace>/``: beside what the namespace's own folder holds."""

    def path_for(self, body: dict[str, Any]) -> str:
        metadata = body["metadata"]
        return f"{self.folder}/{metadata['namespace']}/{body['kind'].lower()}-{metadata['name']}.yaml"


@dataclass(frozen=True)
class RoleGrant:
    """The controller's Role in one namespace."""

    folder: str
    """The hub folder it is written under: ``controller``, ``namespaces`` or ``clusters``."""
    rules: list[dict[str, Any]]
    source: str
    """The source annotation: the files that make the namespace one the controller writes in."""


def role_grants(repository: Repository) -> dict[str, RoleGrant]:
    """Each namespace the controller writes in -> its Role, sorted by namespace.

    Every cluster of ``clusters/`` gets its Role, whether or not a job uses its data now: a Role that came and
    went with the jobs would be pruned (with a job removed from the repository, or a dataset dropped from a
    cluster) before the controller has deleted that job's ManifestWorks.
    """
    job_sources: dict[str, list[str]] = defaultdict(list)
    for job in repository.jobs.values():
        job_sources[job.namespace].append(repository.source(job).file)
    grants = {CONTROLLER_NAMESPACE: RoleGrant("controller", controller_namespace_rules(repository), SOURCE)}
    for namespace, files in job_sources.items():
        grants[namespace] = RoleGrant("namespaces", JOB_NAMESPACE_RULES, ",".join(sorted(files)))
    for cluster in repository.clusters.values():
        grants[cluster.name] = RoleGrant("clusters", CLUSTER_NAMESPACE_RULES, repository.source(cluster).file)
    return {namespace: grants[namespace] for namespace in sorted(grants)}


def build_controller(app: FleetApp, repository: Repository) -> None:
    chart = FolderChart(app, "controller")
    Namespace(chart, name=CONTROLLER_NAMESPACE, component=COMPONENT, source=SOURCE)
    for crd_spec in (federated_learning_crd_spec(), managed_cluster_labels_crd_spec()):
        CustomResourceDefinition(chart, spec=crd_spec, component=COMPONENT, instance=CONTROLLER_NAME, source=SOURCE)
    ServiceAccount(chart, name=CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE, component=COMPONENT, source=SOURCE)
    ClusterRole(
        chart, name=CONTROLLER_NAME, rules=copy.deepcopy(CLUSTER_ROLE_RULES), component=COMPONENT, source=SOURCE
    )
    ClusterRole(
        chart,
        name=CLUSTER_LABELS_ROLE,
        rules=copy.deepcopy(CLUSTER_LABELS_RULES),
        component=COMPONENT,
        source=SOURCE,
    )
    for role_name in (CONTROLLER_NAME, CLUSTER_LABELS_ROLE):
        ClusterRoleBinding(
            chart,
            name=role_name,
            cluster_role=role_name,
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
    # Job namespaces are GitOps' own (namespaces/<namespace>/); cluster namespaces OCM makes on registration,
    # and clusters/<cluster>/ already writes into them.
    scopes: dict[str, FolderChart] = {
        "controller": chart,
        "namespaces": _NamespaceFolders(app, "namespaces"),
        "clusters": _NamespaceFolders(app, "clusters"),
    }
    for namespace, grant in role_grants(repository).items():
        scope = scopes[grant.folder]
        Role(
            scope,
            name=CONTROLLER_NAME,
            namespace=namespace,
            rules=copy.deepcopy(grant.rules),
            component=COMPONENT,
            source=grant.source,
        )
        RoleBinding(
            scope,
            name=CONTROLLER_NAME,
            namespace=namespace,
            role=CONTROLLER_NAME,
            service_account=CONTROLLER_NAME,
            service_account_namespace=CONTROLLER_NAMESPACE,
            component=COMPONENT,
            source=grant.source,
        )
    # OCM's add-on manager signs the collaborators' registrations with the hub CA: it may read that Secret only.
    Role(
        chart,
        name=SIGNER_ROLE,
        namespace=CONTROLLER_NAMESPACE,
        rules=copy.deepcopy(SIGNER_RULES),
        component=COMPONENT,
        source=SOURCE,
    )
    RoleBinding(
        chart,
        name=SIGNER_ROLE,
        namespace=CONTROLLER_NAMESPACE,
        role=SIGNER_ROLE,
        service_account=ADDON_MANAGER_ACCOUNT,
        service_account_namespace=ADDON_MANAGER_NAMESPACE,
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
