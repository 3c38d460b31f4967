"""ManifestWork: objects the hub delivers to one managed cluster (here: its ClusterClaims)."""

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
            body={"spec": {"workload": {"manifests": manifests}}},
        )


def cluster_claim(name: str, value: str) -> dict[str, Any]:
    """A ClusterClaim (cluster-scoped, on the managed cluster) as a ManifestWork workload manifest."""
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1alpha1",
        "kind": "ClusterClaim",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "fleet"}},
        "spec": {"value": value},
    }
