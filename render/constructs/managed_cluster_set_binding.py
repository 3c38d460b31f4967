"""ManagedClusterSetBinding: lets Placements in a namespace select clusters of one cluster set."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class ManagedClusterSetBinding(HubObject):
    def __init__(self, scope: Construct, *, cluster_set: str, namespace: str, component: str, source: str) -> None:
        super().__init__(
            scope,
            api_version="cluster.open-cluster-management.io/v1beta2",
            kind="ManagedClusterSetBinding",
            name=cluster_set,  # OCM requires the binding to be named after the set
            namespace=namespace,
            component=component,
            instance=namespace,
            source=source,
            body={"spec": {"clusterSet": cluster_set}},
        )
