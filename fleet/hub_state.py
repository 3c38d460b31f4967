"""What ``fleet plan --hub`` reads from a live hub: the facts OCM's scheduler uses that Git does not own.

- every PlacementDecision, in every namespace: Balance counts the decisions of all other Placements, Steady
  and the ``NoSelectIfNew`` taint read the Placement's own;
- every ManagedCluster: whether a declared cluster is registered at all, its taints (OCM taints a cluster it
  cannot reach), whether it is being deleted, the allocatable and capacity its klusterlet reports (what the
  ResourceAllocatable prioritizers score), and its labels, to show where the hub differs from what Git
  declares (labels not applied yet, a label set by hand) or where labels Git applied outlive a removed
  ``clusters/`` file (the managers that own them, from managedFields).

Labels, the cluster set and the ClusterClaims come from Git: they are what the rendered manifests make true.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet.hub import SOURCE_ANNOTATION
from fleet.placement import CLUSTER_SET_LABEL, HubCluster, PriorDecision, managed_cluster

if TYPE_CHECKING:
    from fleet.controller.hub import HubClient
    from fleet.models import Cluster

LABELS_FIELD_MANAGER = "fleet-cluster-labels"
"""The field manager under which the controller applies Git's labels to ManagedClusters
(`fleet.controller.cluster_labels`): the one owner of those labels."""
GITOPS_FIELD_MANAGERS = ("argocd-controller", "kustomize-controller")
"""The field managers under which Argo CD and Flux server-side applied the partial ManagedClusters this
project rendered before ManagedClusterLabels: labels they own on a cluster Git no longer declares stay until
removed by hand."""


class HubUnreadable(Exception):
    """The hub could not be asked; the message says why."""


@dataclass(frozen=True)
class LiveHub:
    decisions: tuple[PriorDecision, ...]
    clusters: Mapping[str, Mapping[str, Any]]
    """The ManagedClusters on the hub, by name."""

    @classmethod
    def read(cls, client: HubClient) -> LiveHub:
        from fleet.controller.hub import ApiError
        from fleet.controller.objects import MANAGED_CLUSTER, PLACEMENT_DECISION

        try:
            decisions = client.list(PLACEMENT_DECISION)
            clusters = client.list(MANAGED_CLUSTER)
        except ApiError as error:
            raise HubUnreadable(str(error)) from error
        return cls.of(decisions, clusters)

    @classmethod
    def of(cls, decisions: Sequence[Mapping[str, Any]], clusters: Sequence[Mapping[str, Any]]) -> LiveHub:
        ordered = sorted(decisions, key=lambda d: (d["metadata"].get("namespace", ""), d["metadata"]["name"]))
        return cls(
            tuple(PriorDecision.from_object(d) for d in ordered),
            {str(c["metadata"]["name"]): c for c in clusters},
        )

    def placement_decisions(self, namespace: str, placement: str) -> list[str]:
        """The clusters the Placement's own PlacementDecisions name now, in their order."""
        return [c for d in self.decisions if d.namespace == namespace and d.placement == placement for c in d.clusters]

    def hub_cluster(self, declared: Cluster) -> HubCluster | None:
        """The cluster as OCM will see it once Git's manifests are applied: Git's labels, set and claims over
        what the hub reports (its other labels and claims, taints, deletion, allocatable); None when no
        ManagedCluster of that name is registered."""
        live = self.clusters.get(declared.name)
        if live is None:
            return None
        reported = HubCluster.from_object(live)
        git = managed_cluster(declared)
        labels = {**reported.labels, **git["metadata"]["labels"]}
        claims = {**reported.claims, **{c["name"]: c["value"] for c in git["status"]["clusterClaims"]}}
        status = dict(live.get("status") or {})
        status["clusterClaims"] = [{"name": k, "value": v} for k, v in claims.items()]
        metadata = {**(live.get("metadata") or {}), "labels": labels}
        return HubCluster(
            name=declared.name,
            labels=labels,
            claims=claims,
            managed_cluster={**live, "metadata": metadata, "status": status},
            # A klusterlet that reports no allocatable (not yet joined): the declared capacity stands in.
            allocatable=reported.allocatable or _declared(declared),
            capacity=reported.capacity or _declared(declared),
            taints=reported.taints,
            terminating=reported.terminating,
        )

    def undeclared(self, declared: Mapping[str, Cluster]) -> list[HubCluster]:
        """The registered clusters ``clusters/`` does not declare, as the hub reports them (OCM may select them
        too, when their labels and claims fit)."""
        return [HubCluster.from_object(c) for name, c in sorted(self.clusters.items()) if name not in declared]


def _declared(cluster: Cluster) -> dict[str, float]:
    return {"cpu": float(cluster.capacity.cpu.value), "memory": float(cluster.capacity.memory.value)}


def label_drift(declared: Cluster, live: Mapping[str, Any]) -> list[tuple[str, str | None, str]]:
    """The labels Git declares that the hub does not carry (yet): (key, the hub's value or None, Git's)."""
    have = (live.get("metadata") or {}).get("labels") or {}
    want = {**declared.labels, CLUSTER_SET_LABEL: declared.cluster_set}
    return [(key, have.get(key), value) for key, value in sorted(want.items()) if have.get(key) != value]


def owned_labels(live: Mapping[str, Any], managers: Sequence[str] = (LABELS_FIELD_MANAGER,)) -> list[str]:
    """The label keys that ``managers`` own through server-side apply on a ManagedCluster (its managedFields),
    sorted; with no managedFields, none are known."""
    keys: set[str] = set()
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") not in managers or entry.get("operation") != "Apply":
            continue
        labels = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        keys.update(key.removeprefix("f:") for key in labels if key.startswith("f:"))
    return sorted(keys)


def leftover_note(name: str, live: Mapping[str, Any]) -> str | None:
    """What to say of a ManagedCluster ``clusters/`` does not declare that still carries labels Git applied:
    the controller's (its sweep removes them) or those an earlier partial ManagedCluster left (removed by hand,
    with the command); None when it carries none."""
    controllers = owned_labels(live)
    earlier = [key for key in owned_labels(live, GITOPS_FIELD_MANAGERS) if key not in controllers]
    notes = []
    if controllers:
        notes.append(
            f"{name}: no clusters/ file declares it, but it still carries the labels the controller applied "
            f"({', '.join(controllers)}): the ManagedClusterLabels finalizer or the controller's sweep removes "
            f"them; if they stay, the controller is not running or the hub refuses it (see its log)"
        )
    if earlier:
        source = left_by_git(live)
        notes.append(
            f"{name}: labels a partial ManagedCluster applied before ManagedClusterLabels stay "
            f"({', '.join(earlier)}{f', from {source}' if source else ''}): no controller owns them; remove "
            f"them with: kubectl label managedcluster {name} {' '.join(k + '-' for k in earlier)}"
        )
    return "; ".join(notes) or None


def left_by_git(live: Mapping[str, Any]) -> str | None:
    """The ``clusters/`` file a ManagedCluster's Git labels came from (the rendered source annotation), when
    it carries one."""
    source = ((live.get("metadata") or {}).get("annotations") or {}).get(SOURCE_ANNOTATION)
    return str(source) if source else None
