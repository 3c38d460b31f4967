"""ManagedClusterSet: a named group of managed clusters that namespaces can be bound to."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class ManagedClusterSet(HubObject):
    def __init__(self, scope: Construct, *, name: str, source: str) -> None:
        super().__init__(
            scope,
            api_version="cluster.open-cluster-management.io/v1beta2",
            kind="ManagedClusterSet",
            name=name,
            component="cluster-set",
            instance=name,
            source=source,
            # Membership is the cluster.open-cluster-management.io/clusterset label on each ManagedCluster.
            body={"spec": {"clusterSelector": {"selectorType": "ExclusiveClusterSetLabel"}}},
        )
