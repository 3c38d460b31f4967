"""ManagedCluster, partial: only the labels ``clusters/`` declares and the cluster set, server-side applied.

The hub's ManagedCluster belongs to OCM: the klusterlet registers it, a hub administrator accepts it
(``spec.hubAcceptsClient``), the klusterlet keeps its status, OCM adds taints. Git sets labels on it and nothing
else. The object carries no ``spec`` and no ``status``: applied server-side (SSA), it owns exactly the fields it
names, under the GitOps tool's field manager; labels others set stay theirs, and a label Git stops declaring is
removed by the next apply.

Pruning or deleting a ManagedCluster detaches the spoke (OCM: deleting it exiles the cluster), so neither
Argo CD nor Flux may ever delete this one: not when its file leaves ``clusters/``, not when an Application is
deleted. The annotations below say so to each tool.
"""

from __future__ import annotations

from constructs import Construct

from fleet.placement import CLUSTER_SET_LABEL
from render.constructs.base import HubObject

GITOPS_ANNOTATIONS = {
    # Apply server-side (owning only these fields, --force-conflicts), never prune, never delete with the
    # Application; diff server-side as well, since a partial object diffed client-side looks out of sync.
    "argocd.argoproj.io/sync-options": "ServerSideApply=true,Prune=false,Delete=false",
    "argocd.argoproj.io/compare-options": "ServerSideDiff=true",
    # Flux applies server-side always; Merge keeps fields other tools added (kubectl label), Disabled keeps
    # the object when it leaves the source.
    "kustomize.toolkit.fluxcd.io/ssa": "Merge",
    "kustomize.toolkit.fluxcd.io/prune": "Disabled",
}
"""How Argo CD and Flux must treat a partial ManagedCluster."""


class ManagedClusterLabels(HubObject):
    def __init__(
        self, scope: Construct, *, cluster: str, cluster_set: str, labels: dict[str, str], source: str
    ) -> None:
        super().__init__(
            scope,
            api_version="cluster.open-cluster-management.io/v1",
            kind="ManagedCluster",
            name=cluster,
            component="cluster-labels",
            instance=cluster,
            source=source,
            labels={**dict(sorted(labels.items())), CLUSTER_SET_LABEL: cluster_set},
            annotations=GITOPS_ANNOTATIONS,
            body={},
        )
