"""Which clusters each job's Placement selects, and why every other cluster is out: ``fleet plan``.

The plan reads the Placement exactly as the renderer writes it (from ``render.synth(repository, "hub")``: the
job's Placement, the ManagedClusterSetBindings of its namespace and the ManagedClusterSets) and decides with the
one model of OCM's scheduler, `fleet.placement.evaluate`, over the clusters of ``clusters/``. This module only
names the decisions: which dataset, which policy (from the Placement's ``fleet.dev/policies`` annotation), which
cluster set, which capacity.

Balance and Steady score from PlacementDecisions. Offline the plan assumes a first placement on a hub holding
none (`FIRST_PLACEMENT`); ``--diff`` takes each job's base selection as its Placement's earlier decisions
(`BASE_DECISIONS`); ``--hub`` reads the hub's (`HUB_DECISIONS`, `fleet.hub_state`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.claims import CPU_CLAIM, GPU_CLAIM, MEMORY_CLAIM, dataset_claim
from fleet.hub import JOB_LABEL, POLICIES_ANNOTATION
from fleet.hub_state import LiveHub, label_drift, leftover_note
from fleet.models import Cluster, Job
from fleet.placement import (
    CLUSTER_SET_LABEL,
    ClusterDecision,
    ClusterSet,
    Condition,
    DecisionGroup,
    Exclusion,
    HubCluster,
    HubContext,
    PriorDecision,
    evaluate,
    governing_policies,
)
from fleet.repository import Repository

PLACEMENT_API = "cluster.open-cluster-management.io/v1beta1"
BINDING_KIND = "ManagedClusterSetBinding"
CLUSTER_SET_KIND = "ManagedClusterSet"

FIRST_PLACEMENT = "first-placement"
BASE_DECISIONS = "base-decisions"
HUB_DECISIONS = "hub-decisions"
BASIS = {
    FIRST_PLACEMENT: "Balance and Steady assume a first placement on a hub holding no PlacementDecisions (Balance 100 "
    "and Steady 0 for every cluster); `fleet plan --hub` reads the live decisions",
    BASE_DECISIONS: "Steady takes the base's selection as the Placement's earlier decisions; other Placements' "
    "decisions are not known (Balance 100 for every cluster); `--hub` reads them",
    HUB_DECISIONS: "Balance and Steady read the hub's PlacementDecisions (Balance every other Placement's, Steady "
    "this one's)",
}
"""How the scores of Balance and Steady were made, by basis."""


class PlanError(Exception):
    """The plan cannot be made: an unknown job, or a rendered Placement missing."""


@dataclass(frozen=True)
class Reason:
    """Why one cluster is out, in the terms of the repository."""

    category: str
    """``dataset``, ``policy``, ``clusterSet``, ``capacity``, ``numberOfClusters``, ``selector``, ``registration``
    (not on the hub), ``taint``, ``terminating`` or ``misconfigured``."""
    rule: str
    """The Placement field at fault (see `fleet.placement.Exclusion`)."""
    message: str
    policy: str = ""

    def to_json(self) -> dict[str, str]:
        data = {"category": self.category, "rule": self.rule, "message": self.message}
        if self.policy:
            data["policy"] = self.policy
        return data


@dataclass(frozen=True)
class ClusterPlan:
    cluster: str
    cluster_set: str
    selected: bool
    score: int | None
    reasons: tuple[Reason, ...] = ()
    scores: Mapping[str, int] = field(default_factory=dict)
    """Each prioritizer's score (before its weight)."""
    declared: bool = True
    """False for a cluster registered on the hub that ``clusters/`` does not declare (``--hub``)."""
    hub_notes: tuple[str, ...] = ()
    """Where the hub differs from what Git declares (``--hub``)."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "cluster": self.cluster,
            "clusterSet": self.cluster_set,
            "selected": self.selected,
            "score": self.score,
            "scores": dict(self.scores),
            "reasons": [r.to_json() for r in self.reasons],
        }
        if not self.declared:
            data["declared"] = False
        if self.hub_notes:
            data["hub"] = list(self.hub_notes)
        return data


@dataclass(frozen=True)
class JobPlan:
    job: str
    namespace: str
    dataset: str
    placement: str
    """The rendered Placement's file, relative to the hub target."""
    cluster_sets: tuple[str, ...]
    bound_cluster_sets: tuple[str, ...]
    policies: tuple[str, ...]
    number_of_clusters: int | None
    min_available_clients: int
    clusters: tuple[ClusterPlan, ...]
    """Every cluster of clusters/ (and, with --hub, every other registered one): the selected ones first in rank
    order, then the rest by name."""
    satisfied: Condition | None = None
    """``PlacementSatisfied`` as OCM would set it."""
    misconfigured: Condition | None = None
    decision_groups: tuple[DecisionGroup, ...] = ()
    weights: Mapping[str, int] = field(default_factory=dict)
    basis: str = FIRST_PLACEMENT
    """How Balance and Steady were scored: a key of `BASIS`."""
    live_decisions: tuple[str, ...] | None = None
    """With --hub: the clusters the Placement's PlacementDecisions name now."""
    notes: tuple[str, ...] = ()
    """What the hub holds that Git does not explain (--hub): labels Git left on clusters it no longer declares."""

    @property
    def selected(self) -> list[str]:
        return [c.cluster for c in self.clusters if c.selected]

    @property
    def min_available_met(self) -> bool:
        return len(self.selected) >= self.min_available_clients

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "job": self.job,
            "namespace": self.namespace,
            "dataset": self.dataset,
            "placement": {
                "file": self.placement,
                "clusterSets": list(self.cluster_sets),
                "boundClusterSets": list(self.bound_cluster_sets),
                "policies": list(self.policies),
                "numberOfClusters": self.number_of_clusters,
            },
            "minAvailableClients": self.min_available_clients,
            "minAvailableClientsMet": self.min_available_met,
            "selected": self.selected,
            "conditions": [c.to_json() for c in (self.satisfied, self.misconfigured) if c is not None],
            "decisionGroups": [g.to_json() for g in self.decision_groups],
            "scoring": {"basis": self.basis, "note": BASIS[self.basis], "weights": dict(self.weights)},
            "clusters": [c.to_json() for c in self.clusters],
        }
        if self.live_decisions is not None:
            data["liveDecisions"] = list(self.live_decisions)
        if self.notes:
            data["notes"] = list(self.notes)
        return data


def plan(
    repository: Repository,
    jobs: Sequence[str] = (),
    rendered: Sequence[tuple[str, Mapping[str, Any]]] | None = None,
    *,
    hub: LiveHub | None = None,
    earlier: Mapping[str, Sequence[str]] | None = None,
) -> list[JobPlan]:
    """The plan of each job named in ``jobs`` (all jobs when empty), in the order given or by name.

    ``rendered`` is the hub target as ``(path, body)`` pairs; it is rendered here when not given. ``hub``: the
    live hub's decisions and clusters (`HUB_DECISIONS`); else ``earlier``: job name -> the clusters its
    Placement chose before (`BASE_DECISIONS`, for the jobs it names); else a first placement.
    """
    unknown = [name for name in jobs if name not in repository.jobs]
    if unknown:
        known = ", ".join(repository.jobs) or "none"
        raise PlanError(f"no job named {', '.join(map(repr, unknown))} under jobs/ (jobs: {known})")
    if rendered is None:
        import render

        rendered = [(m.path, m.body) for m in render.synth(repository, "hub")]
    names = list(dict.fromkeys(jobs)) or list(repository.jobs)
    index = _RenderedIndex.of(rendered)
    return [_job_plan(repository, repository.jobs[name], index, hub, earlier or {}) for name in names]


@dataclass
class _RenderedIndex:
    """What a plan reads from the rendered hub objects, found in one pass over them."""

    placements: dict[str, list[tuple[str, Mapping[str, Any]]]] = field(default_factory=dict)
    """Job name -> its Placements (path, body); exactly one is expected."""
    bound_sets: dict[str, list[str]] = field(default_factory=dict)
    """Namespace -> the cluster sets bound to it."""
    min_available: dict[str, int] = field(default_factory=dict)
    """Job name -> minAvailableClients of its rendered FederatedLearning (what the controller waits for)."""
    cluster_sets: dict[str, ClusterSet] = field(default_factory=dict)
    """The rendered ManagedClusterSets, by name."""

    @classmethod
    def of(cls, rendered: Sequence[tuple[str, Mapping[str, Any]]]) -> _RenderedIndex:
        index = cls()
        for path, body in rendered:
            kind, metadata = body.get("kind"), body.get("metadata") or {}
            job = (metadata.get("labels") or {}).get(JOB_LABEL)
            if kind == "Placement" and body.get("apiVersion") == PLACEMENT_API and job is not None:
                index.placements.setdefault(job, []).append((path, body))
            elif kind == BINDING_KIND:
                index.bound_sets.setdefault(metadata.get("namespace", ""), []).append(body["spec"]["clusterSet"])
            elif kind == CLUSTER_SET_KIND:
                cluster_set = ClusterSet.from_object(body)
                index.cluster_sets[cluster_set.name] = cluster_set
            elif kind == "FederatedLearning" and job is not None and job not in index.min_available:
                value = (body.get("spec") or {}).get("server", {}).get("minAvailableClients")
                if isinstance(value, int):
                    index.min_available[job] = value
        return index


def _job_plan(
    repository: Repository,
    job: Job,
    index: _RenderedIndex,
    hub: LiveHub | None,
    earlier: Mapping[str, Sequence[str]],
) -> JobPlan:
    found = index.placements.get(job.name, [])
    if len(found) != 1:
        raise PlanError(f"expected one rendered Placement labelled {JOB_LABEL}={job.name}, found {len(found)}")
    path, placement = found[0]
    metadata = placement["metadata"]
    namespace: str = metadata["namespace"]
    spec: Mapping[str, Any] = placement.get("spec") or {}
    bound = tuple(sorted(index.bound_sets.get(namespace, [])))
    annotation: str = (metadata.get("annotations") or {}).get(POLICIES_ANNOTATION, "")
    policies = tuple(name for name in annotation.split(",") if name)

    name: str = metadata["name"]
    declared = dict(repository.clusters)
    views: list[Cluster | HubCluster] = list(declared.values())
    unregistered: list[Cluster] = []
    if hub is not None:
        views = []
        for cluster in declared.values():
            view = hub.hub_cluster(cluster)
            if view is None:
                unregistered.append(cluster)
            else:
                views.append(view)
        views += hub.undeclared(declared)
        context = HubContext(namespace, name, hub.decisions, True, index.cluster_sets)
        basis = HUB_DECISIONS
    elif job.name in earlier:
        before = (PriorDecision(namespace, name, tuple(earlier[job.name])),)
        context = HubContext(namespace, name, before, False, index.cluster_sets)
        basis = BASE_DECISIONS
    else:
        context = HubContext(namespace, name, (), False, index.cluster_sets)
        basis = FIRST_PLACEMENT
    result = evaluate(spec, bound, views, context=context)
    plans = [
        ClusterPlan(
            d.cluster,
            _cluster_set(d.cluster, declared, hub),
            d.selected,
            d.score,
            _reasons(d, job, declared.get(d.cluster), repository, policies, namespace),
            d.scores,
            declared=d.cluster in declared,
            hub_notes=_hub_notes(declared.get(d.cluster), hub),
        )
        for d in result.decisions
    ]
    if unregistered:
        message = (
            "not registered on the hub (no ManagedCluster of this name): a hub administrator accepts it once its "
            "klusterlet joins"
        )
        reason = (Reason("registration", "registration", message),)
        out = [ClusterPlan(c.name, c.cluster_set, False, None, reason) for c in unregistered]
        selected = [p for p in plans if p.selected]
        plans = selected + sorted([p for p in plans if not p.selected] + out, key=lambda p: p.cluster)
    return JobPlan(
        job=job.name,
        namespace=namespace,
        dataset=job.dataset,
        placement=path,
        cluster_sets=tuple(spec.get("clusterSets") or ()),
        bound_cluster_sets=bound,
        policies=policies,
        number_of_clusters=spec.get("numberOfClusters"),
        min_available_clients=index.min_available.get(job.name, job.min_available_clients),
        clusters=tuple(plans),
        satisfied=result.satisfied,
        misconfigured=result.misconfigured,
        decision_groups=result.decision_groups,
        weights=result.weights,
        basis=basis,
        live_decisions=None if hub is None else tuple(hub.placement_decisions(namespace, name)),
        notes=_framework_note(job) + _left_by_git(declared, hub),
    )


def _framework_note(job: Job) -> tuple[str, ...]:
    """What the hub runs for the job beyond its placement, where its runtime says more (`fleet.runtimes`)."""
    from fleet.runtimes import runtime_for

    return runtime_for(job.framework).plan_notes(job)


def _cluster_set(name: str, declared: Mapping[str, Cluster], hub: LiveHub | None) -> str:
    if name in declared:
        return declared[name].cluster_set
    live = hub.clusters.get(name) if hub is not None else None
    return str(((live or {}).get("metadata") or {}).get("labels", {}).get(CLUSTER_SET_LABEL, ""))


def _hub_notes(cluster: Cluster | None, hub: LiveHub | None) -> tuple[str, ...]:
    if hub is None:
        return ()
    if cluster is None:
        return ("registered on the hub, not declared in clusters/",)
    live = hub.clusters.get(cluster.name)
    if live is None:
        return ()
    return tuple(
        f"label {key} is {'absent' if have is None else repr(have)} on the hub, Git declares {want!r} "
        "(the controller has not applied its ManagedClusterLabels yet, or someone changed it by hand)"
        for key, have, want in label_drift(cluster, live)
    )


def _left_by_git(declared: Mapping[str, Cluster], hub: LiveHub | None) -> tuple[str, ...]:
    """Clusters no clusters/ file declares that still carry labels Git applied (`hub_state.leftover_note`)."""
    notes = [
        note
        for name, live in sorted((hub.clusters if hub is not None else {}).items())
        if name not in declared and (note := leftover_note(name, live)) is not None
    ]
    return tuple(notes)


def exclusion_reasons(repository: Repository, job: Job, decision: ClusterDecision) -> tuple[str, ...]:
    """Why ``job``'s Placement leaves a cluster out, worded as ``fleet plan`` words it (quantities, the policy
    by name), from a decision of `Repository.placement` rather than of the rendered Placement."""
    policies = [p.name for p in governing_policies(job, repository.policies.values())]
    cluster = repository.clusters[decision.cluster]
    return tuple(r.message for r in _reasons(decision, job, cluster, repository, policies, job.namespace))


def _reasons(
    decision: ClusterDecision,
    job: Job,
    cluster: Cluster | None,
    repository: Repository,
    policies: Sequence[str],
    namespace: str,
) -> tuple[Reason, ...]:
    return tuple(_reason(e, job, cluster, repository, policies, namespace) for e in decision.exclusions)


def _reason(
    exclusion: Exclusion,
    job: Job,
    cluster: Cluster | None,
    repository: Repository,
    policies: Sequence[str],
    namespace: str,
) -> Reason:
    rule, message = exclusion.rule, exclusion.message
    if rule == "claimSelector" and exclusion.key == dataset_claim(job.dataset):
        return Reason("dataset", rule, f"holds no {job.dataset!r} dataset (no {exclusion.key} claim)")
    if rule == "labelSelector":
        # The label selector is the AND of the governing policies' allowedClusters: name the one(s) that
        # carry the failing key.
        owners = [name for name in policies if _mentions(repository, name, exclusion.key)]
        if owners:
            names = ", ".join(owners)
            return Reason("policy", rule, f"policy {names}: {message}", policy=names)
    if rule == "clusterSetBinding":
        return Reason("clusterSet", rule, f"{message} {namespace!r}")
    if rule in ("clusterSets", "clusterSet"):
        return Reason("clusterSet", rule, message)
    if rule == "celSelector":
        gap = message if cluster is None else _capacity_gap(job, cluster, message)
        return Reason("capacity", rule, f"capacity below the request: {gap}")
    other = {"numberOfClusters": "numberOfClusters", "tolerations": "taint", "terminating": "terminating"}
    if rule in other:
        return Reason(other[rule], rule, message)
    if rule == "misconfigured":
        return Reason("misconfigured", rule, message)
    return Reason("selector", rule, message)


def _mentions(repository: Repository, policy: str, key: str) -> bool:
    found = repository.policies.get(policy)
    if found is None:
        return False
    selector = found.allowed_clusters
    return key in selector.match_labels or any(req.key == key for req in selector.match_expressions)


def _capacity_gap(job: Job, cluster: Cluster, message: str) -> str:
    """Which requested amount the failing CEL expression compares, next to what the cluster offers."""
    wanted, offered = job.resources, cluster.capacity
    parts = {
        CPU_CLAIM: f"cpu {wanted.cpu} requested, cluster has {offered.cpu}",
        MEMORY_CLAIM: f"memory {wanted.memory} requested, cluster has {offered.memory}",
        GPU_CLAIM: f"gpu {wanted.gpu} requested, cluster has {offered.gpu}",
    }
    named = [text for claim, text in parts.items() if f'"{claim}"' in message]
    return "; ".join(named) if named else message


# --- plan diff ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobChange:
    job: str
    status: str
    """``added``, ``removed``, ``changed`` or ``unchanged``."""
    before: tuple[str, ...]
    after: tuple[str, ...]
    min_available_before: bool | None
    min_available_after: bool | None

    @property
    def gained(self) -> list[str]:
        return sorted(set(self.after) - set(self.before))

    @property
    def lost(self) -> list[str]:
        return sorted(set(self.before) - set(self.after))

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "status": self.status,
            "before": list(self.before),
            "after": list(self.after),
            "gained": self.gained,
            "lost": self.lost,
            "minAvailableClientsMetBefore": self.min_available_before,
            "minAvailableClientsMetAfter": self.min_available_after,
        }


def compare(base: Sequence[JobPlan], head: Sequence[JobPlan]) -> list[JobChange]:
    """Per job (of either side, by name): the clusters selected before and after."""
    before = {p.job: p for p in base}
    after = {p.job: p for p in head}
    changes: list[JobChange] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        old_selected = tuple(sorted(old.selected)) if old else ()
        new_selected = tuple(sorted(new.selected)) if new else ()
        old_met = old.min_available_met if old else None
        new_met = new.min_available_met if new else None
        if old is None:
            status = "added"
        elif new is None:
            status = "removed"
        elif old_selected != new_selected or old_met != new_met:
            status = "changed"
        else:
            status = "unchanged"
        changes.append(JobChange(name, status, old_selected, new_selected, old_met, new_met))
    return changes
