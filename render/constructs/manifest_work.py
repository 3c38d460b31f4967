"""ManifestWork: objects the hub delivers to one managed cluster (here: its ClusterClaims, and the permission the
work agent needs to apply them)."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class ManifestWork(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        cluster: str,
        manifests: list[dict[str, Any]],
        component: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="work.open-cluster-management.io/v1",
            kind="ManifestWork",
            name=name,
            namespace=cluster,  # a ManifestWork lives in the namespace named after its managed cluster
            component=component,
            instance=cluster,
            source=source,
            body={"spec": {"workload": {"manifests": _with_permissions(manifests)}}},
        )


def _with_permissions(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``manifests``, led by the ClusterRole the work agent needs to apply them where they hold ClusterClaims (the
    agent applies a work's manifests in order and retries those it was refused)."""
    if any(m.get("kind") == "ClusterClaim" for m in manifests):
        return [cluster_claims_writer(), *manifests]
    return manifests


def cluster_claim(name: str, value: str) -> dict[str, Any]:
    """A ClusterClaim (cluster-scoped, on the managed cluster) as a ManifestWork workload manifest."""
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1alpha1",
        "kind": "ClusterClaim",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "fleet"}},
        "spec": {"value": value},
    }


WORK_AGENT_AGGREGATE_LABEL = "open-cluster-management.io/aggregate-to-work"
"""A ClusterRole with this label is aggregated into the work agent's own (ocm
``pkg/operator/operators/klusterlet/controllers/klusterletcontroller/managed_reconcile.go``)."""
CLAIMS_WRITER_ROLE = "open-cluster-management:fleet:work-cluster-claims"


def cluster_claims_writer() -> dict[str, Any]:
    """The ClusterRole that lets a default klusterlet's work agent apply ClusterClaims, as a workload manifest to
    deliver before them: its own roles (``admin``, ``-work:agent``, ``-work:execution``) do not cover that
    cluster-scoped kind, but ``-work:execution`` lets it create ClusterRoles it may escalate, and one labelled
    `WORK_AGENT_AGGREGATE_LABEL` joins the permissions it holds."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": CLAIMS_WRITER_ROLE,
            "labels": {"app.kubernetes.io/part-of": "fleet", WORK_AGENT_AGGREGATE_LABEL: "true"},
        },
        "rules": [
            {
                "apiGroups": ["cluster.open-cluster-management.io"],
                "resources": ["clusterclaims"],
                "verbs": ["get", "create", "update", "patch", "delete"],
            }
        ],
    }
