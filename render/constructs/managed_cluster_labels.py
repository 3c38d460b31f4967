"""ManagedClusterLabels (federation.fleet.dev): what one ``clusters/`` file declares about its ManagedCluster's
labels and cluster set.

An ordinary cluster-scoped object of this project, named after the cluster, that Argo CD and Flux apply and
prune like any other: the controller applies its labels to the ManagedCluster under a field manager of its own
and, when the object is deleted, removes exactly those (`fleet.controller.cluster_labels`). Git itself never
writes a ManagedCluster, so no GitOps tool can delete or detach one.
"""

from __future__ import annotations

from constructs import Construct

from fleet.claims import API_GROUP
from fleet.crd import LABELS_KIND, VERSION
from fleet.models import Cluster, ManagedClusterLabelsSpec
from render.constructs.base import HubObject


class ManagedClusterLabels(HubObject):
    def __init__(self, scope: Construct, *, cluster: Cluster, source: str) -> None:
        spec = ManagedClusterLabelsSpec.from_cluster(cluster)
        super().__init__(
            scope,
            api_version=f"{API_GROUP}/{VERSION}",
            kind=LABELS_KIND,
            name=cluster.name,
            component="cluster-labels",
            instance=cluster.name,
            source=source,
            body={"spec": spec.model_dump(mode="json", by_alias=True)},
        )
