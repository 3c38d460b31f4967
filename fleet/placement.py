"""OCM Placement for a job: the one builder of its spec, and the one model of OCM's scheduler that evaluates it.

The renderer writes exactly the spec `placement_spec` returns; the cross-file checks, ``fleet plan`` and
``fleet run`` evaluate that spec with `evaluate`, over the clusters of ``clusters/`` (or, with ``fleet plan
--hub``, over what the hub reports too). There is no second copy of the placement rules.

`evaluate` follows OCM's placement controller (open-cluster-management-io/ocm, pkg/placement: the scheduling
controller, its filters Predicate and TaintToleration, its prioritizers) and the Placement API comments
(cluster/v1beta1):
- candidates are the members of the ManagedClusterSets both bound to the namespace (a binding counts only when
  its set exists) and listed in ``spec.clusterSets`` (all bound sets when the list is empty); an
  ``ExclusiveClusterSetLabel`` set's members carry ``cluster.open-cluster-management.io/clusterset=<set>``, a
  ``LabelSelector`` set's match its selector; clusters being deleted are never candidates;
- ``predicates`` are ORed; inside one ``requiredClusterSelector`` the label, claim and CEL selectors are ANDed; a
  CEL expression that errors on a cluster does not select it;
- a taint with effect ``NoSelect`` (or ``NoSelectIfNew`` on a cluster the Placement has not chosen before)
  keeps a cluster out unless a toleration matches it, for ``tolerationSeconds`` after the taint's
  ``timeAdded``; ``PreferNoSelect`` never does;
- prioritizers score each feasible cluster with an integer in [-100, 100] and the total is
  ``sum(weight * score)``: ``ResourceAllocatableCPU``/``Memory`` map the allocatable amount linearly from the
  smallest (-100) to the largest (100), truncated toward zero (all equal: 100; a cluster reporting no
  allocatable or capacity of that resource: no score); ``Balance`` gives 100 to a cluster no other
  Placement's decisions name and ``2 * int(100 * (0.5 - count / max count))`` to the others; ``Steady`` gives
  100 to the clusters this Placement's own decisions name, 0 to the rest. In ``Additive`` mode (the default)
  Balance and Steady weigh 1 unless configured; in ``Exact`` mode only what is configured counts;
- clusters are ranked by total score, ties by name, and the first ``numberOfClusters`` are chosen (the API
  comment says "a random subset"; the scheduler's sort makes it this one);
- the chosen clusters are split into decision groups (``decisionStrategy.groupStrategy``: each
  ``decisionGroups`` selector first, then the rest, each group sorted by name and cut at
  ``clustersPerDecisionGroup``) and each group into PlacementDecisions of at most 100 clusters, named
  ``<placement>-decision-<n>``;
- the conditions ``PlacementMisconfigured`` and ``PlacementSatisfied`` carry the reasons OCM gives
  (``NoManagedClusterSetBindings``, ``NoIntersection``, ``AllManagedClusterSetsEmpty``,
  ``NoManagedClusterMatched``, ``AllDecisionsScheduled``, ``NotAllDecisionsScheduled``).

Balance and Steady read the hub's PlacementDecisions: a `HubContext` carries them. Without one, the evaluation
assumes a first placement on a hub holding no PlacementDecisions (Balance 100 and Steady 0 for every cluster).
"""

from __future__ import annotations

import datetime
import math
import operator
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

from fleet.claims import CPU_CLAIM, GPU_CLAIM, MEMORY_CLAIM, cluster_claims, dataset_claim
from fleet.models import Cluster, DataLocalityPolicy, Job, label_key_problem
from fleet.quantity import Quantity

CLUSTER_SET_LABEL = "cluster.open-cluster-management.io/clusterset"
PLACEMENT_LABEL = "cluster.open-cluster-management.io/placement"
"""On each PlacementDecision: the name of its Placement (in the same namespace)."""
PRIORITIZERS = ("ResourceAllocatableCPU", "ResourceAllocatableMemory")
"""The prioritizers the renderer configures (weight 1 each); Balance and Steady come with Additive mode."""
BUILT_IN_PRIORITIZERS = ("Balance", "Steady", "ResourceAllocatableCPU", "ResourceAllocatableMemory")
MAX_SCORE = 100
MAX_DECISIONS_PER_OBJECT = 100
"""OCM pages a decision group into PlacementDecisions of at most this many clusters."""
EXCLUSIVE_SELECTOR = "ExclusiveClusterSetLabel"
LABEL_SELECTOR = "LabelSelector"


def governing_policies(job: Job, policies: Iterable[DataLocalityPolicy]) -> list[DataLocalityPolicy]:
    """The policies governing the job's dataset, by name."""
    return sorted((p for p in policies if job.dataset in p.datasets), key=lambda p: p.name)


def placement_spec(job: Job, policies: Iterable[DataLocalityPolicy]) -> dict[str, Any]:
    """The ``spec`` of the job's Placement."""
    label_expressions: list[dict[str, Any]] = []
    for policy in governing_policies(job, policies):
        allowed = policy.allowed_clusters
        # matchLabels become In-expressions so that the selectors of several policies AND together
        # in one list without key clashes.
        for key, value in sorted(allowed.match_labels.items()):
            label_expressions.append({"key": key, "operator": "In", "values": [value]})
        label_expressions += [req.manifest() for req in allowed.match_expressions]

    selector: dict[str, Any] = {
        "claimSelector": {"matchExpressions": [{"key": dataset_claim(job.dataset), "operator": "Exists"}]}
    }
    if label_expressions:
        selector["labelSelector"] = {"matchExpressions": label_expressions}
    capacity = _capacity_expressions(job)
    if capacity:
        selector["celSelector"] = {"celExpressions": capacity}

    return {
        "clusterSets": list(job.cluster_sets),
        "numberOfClusters": job.max_clients,
        "predicates": [{"requiredClusterSelector": selector}],
        "prioritizerPolicy": {
            "mode": "Additive",
            "configurations": [
                {"scoreCoordinate": {"type": "BuiltIn", "builtIn": name}, "weight": 1} for name in PRIORITIZERS
            ],
        },
    }


def _capacity_expressions(job: Job) -> list[str]:
    # OCM label and claim selectors cannot compare numbers; CEL over the capacity claims can.
    wanted = [
        (CPU_CLAIM, job.resources.cpu.milli),
        (MEMORY_CLAIM, job.resources.memory.whole),
        (GPU_CLAIM, job.resources.gpu),
    ]
    return [
        f'managedCluster.status.clusterClaims.exists(c, c.name == "{claim}" && int(c.value) >= {amount})'
        for claim, amount in wanted
        if amount > 0
    ]


# --- what the scheduler reads -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Taint:
    """A ManagedCluster taint (``spec.taints``)."""

    key: str
    value: str = ""
    effect: str = "NoSelect"
    time_added: datetime.datetime | None = None


@dataclass(frozen=True)
class HubCluster:
    """A ManagedCluster as OCM's scheduler reads it: what selectors, prioritizers and the taint filter look at."""

    name: str
    labels: dict[str, str]
    claims: dict[str, str]
    """``status.clusterClaims``, name -> value."""
    managed_cluster: dict[str, Any]
    """The whole object, as CEL expressions see it."""
    allocatable: dict[str, float] = field(default_factory=dict)
    """``status.allocatable`` (cpu in cores, memory in bytes, as Kubernetes' AsApproximateFloat64)."""
    capacity: dict[str, float] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    terminating: bool = False

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> HubCluster:
        """A live ManagedCluster (as the API server returns it)."""
        metadata = obj.get("metadata") or {}
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        claims = {str(c.get("name")): str(c.get("value", "")) for c in status.get("clusterClaims") or []}
        taints = tuple(
            Taint(
                str(t.get("key", "")),
                str(t.get("value", "")),
                str(t.get("effect", "")),
                _timestamp(t.get("timeAdded")),
            )
            for t in spec.get("taints") or []
        )
        return cls(
            name=str(metadata.get("name", "")),
            labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
            claims=claims,
            managed_cluster=dict(obj),
            allocatable=_resources(status.get("allocatable")),
            capacity=_resources(status.get("capacity")),
            taints=taints,
            terminating=bool(metadata.get("deletionTimestamp")),
        )


def _resources(found: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("cpu", "memory"):
        text = (found or {}).get(name) if isinstance(found, Mapping) else None
        try:
            out[name] = float(Quantity(str(text)).value)
        except ValueError:
            continue  # absent or not a quantity: the resource prioritizers give this cluster no score
    return out


def _timestamp(text: Any) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class ClusterSet:
    """A ManagedClusterSet: which clusters are its members."""

    name: str
    selector_type: str = EXCLUSIVE_SELECTOR
    label_selector: Mapping[str, Any] = field(default_factory=dict)
    """For ``LabelSelector`` sets (an empty selector, as the ``global`` set's, selects every cluster)."""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ClusterSet:
        selector = (obj.get("spec") or {}).get("clusterSelector") or {}
        return cls(
            str((obj.get("metadata") or {}).get("name", "")),
            str(selector.get("selectorType") or EXCLUSIVE_SELECTOR),
            dict(selector.get("labelSelector") or {}),
        )

    def has_member(self, cluster: HubCluster) -> bool:
        if self.selector_type == LABEL_SELECTOR:
            return _selector_matches(self.label_selector, cluster.labels)
        return cluster.labels.get(CLUSTER_SET_LABEL) == self.name


@dataclass(frozen=True)
class PriorDecision:
    """One PlacementDecision on the hub: its namespace, its Placement (the placement label) and its clusters."""

    namespace: str
    placement: str
    clusters: tuple[str, ...]

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> PriorDecision:
        metadata = obj.get("metadata") or {}
        decisions = (obj.get("status") or {}).get("decisions") or []
        return cls(
            str(metadata.get("namespace", "")),
            str((metadata.get("labels") or {}).get(PLACEMENT_LABEL, "")),
            tuple(str(d.get("clusterName", "")) for d in decisions),
        )


@dataclass(frozen=True)
class HubContext:
    """What OCM's scheduler reads besides the Placement's spec and the clusters.

    ``decisions_known=False`` means a first placement on a hub holding no PlacementDecisions: Balance scores
    every cluster 100 and Steady 0, which is what `evaluate` assumes without a context.
    """

    namespace: str = ""
    name: str = "placement"
    decisions: tuple[PriorDecision, ...] = ()
    decisions_known: bool = False
    cluster_sets: Mapping[str, ClusterSet] | None = None
    """The ManagedClusterSets on the hub by name; None: each set a cluster's label names exists, exclusive."""
    now: datetime.datetime | None = None
    """For tolerationSeconds; None: the current time."""

    def own_decisions(self) -> set[str]:
        """The clusters this Placement's own PlacementDecisions name (Steady, NoSelectIfNew)."""
        return {
            c for d in self.decisions if d.namespace == self.namespace and d.placement == self.name for c in d.clusters
        }

    def other_counts(self) -> dict[str, int]:
        """How many decisions of other Placements name each cluster (Balance)."""
        counts: dict[str, int] = {}
        for decision in self.decisions:
            if decision.namespace == self.namespace and decision.placement == self.name:
                continue  # Balance does not count the Placement being scheduled
            for cluster in decision.clusters:
                counts[cluster] = counts.get(cluster, 0) + 1
        return counts


FIRST_PLACEMENT = HubContext()


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exclusion:
    """One Placement rule that leaves a cluster out."""

    rule: str
    """The Placement field at fault: ``clusterSets``, ``clusterSetBinding``, ``clusterSet`` (the cluster is in
    no usable set), ``terminating``, ``labelSelector``, ``claimSelector``, ``celSelector``, ``tolerations``,
    ``numberOfClusters`` or ``misconfigured``."""
    message: str
    key: str = ""
    """The label or claim key of a failed selector expression, or the taint key."""


@dataclass(frozen=True)
class ClusterDecision:
    cluster: str
    selected: bool
    score: int | None = None
    """The total score, for clusters that reached scoring."""
    reasons: tuple[str, ...] = ()
    """Why the cluster is out (empty when selected)."""
    exclusions: tuple[Exclusion, ...] = ()
    """The same reasons, each with the rule it comes from."""
    scores: Mapping[str, int] = field(default_factory=dict)
    """Each prioritizer's score (before its weight), for clusters that reached scoring."""


@dataclass(frozen=True)
class Condition:
    """A Placement condition as OCM writes it."""

    type: str
    status: bool
    reason: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "status": str(self.status), "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class DecisionGroup:
    """One decision group: its index and name, its clusters (by name) and the PlacementDecisions holding them."""

    index: int
    name: str
    clusters: tuple[str, ...]
    placement_decisions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "decisionGroupIndex": self.index,
            "decisionGroupName": self.name,
            "clustersCount": len(self.clusters),
            "clusters": list(self.clusters),
            "decisions": list(self.placement_decisions),
        }


@dataclass(frozen=True)
class PlacementResult:
    decisions: tuple[ClusterDecision, ...]
    """One per cluster given, selected ones first in rank order, then the rest by name."""
    feasible: tuple[str, ...] = field(default=())
    """Clusters passing every filter, in rank order, before numberOfClusters cut the list."""
    satisfied: Condition | None = None
    misconfigured: Condition | None = None
    decision_groups: tuple[DecisionGroup, ...] = ()
    """The PlacementDecisions OCM writes (each group's clusters by name)."""
    weights: Mapping[str, int] = field(default_factory=dict)
    """The prioritizers in effect and their weights."""
    decisions_known: bool = False
    """False: Balance and Steady assumed a first placement on a hub holding no PlacementDecisions."""

    unscheduled: int = 0
    """How many of numberOfClusters could not be scheduled (0 when it is unset)."""

    @property
    def selected(self) -> list[str]:
        return [d.cluster for d in self.decisions if d.selected]


def managed_cluster(cluster: Cluster) -> dict[str, Any]:
    """The ManagedCluster (as the hub would see it) for a cluster definition: labels, set label and claims; its
    declared capacity stands for what the klusterlet reports as allocatable and capacity."""
    labels = dict(cluster.labels)
    labels[CLUSTER_SET_LABEL] = cluster.cluster_set
    resources = {"cpu": str(cluster.capacity.cpu), "memory": str(cluster.capacity.memory)}
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {"name": cluster.name, "labels": labels},
        "status": {
            "allocatable": dict(resources),
            "capacity": dict(resources),
            "clusterClaims": [{"name": k, "value": v} for k, v in cluster_claims(cluster).items()],
        },
    }


_VIEWS: dict[int, tuple[weakref.ref[Cluster], HubCluster]] = {}


def _view(cluster: Cluster | HubCluster) -> HubCluster:
    """The hub's view of a cluster definition, built once per cluster rather than once per job."""
    if isinstance(cluster, HubCluster):
        return cluster
    # Definitions are frozen but not hashable (they hold dicts): cache by identity, dropped with the object.
    key = id(cluster)
    entry = _VIEWS.get(key)
    if entry is not None and entry[0]() is cluster:
        return entry[1]
    mc = managed_cluster(cluster)
    amounts = {"cpu": float(cluster.capacity.cpu.value), "memory": float(cluster.capacity.memory.value)}
    view = HubCluster(
        name=cluster.name,
        labels=mc["metadata"]["labels"],
        claims={c["name"]: c["value"] for c in mc["status"]["clusterClaims"]},
        managed_cluster=mc,
        allocatable=amounts,
        capacity=dict(amounts),
    )
    _VIEWS[key] = (weakref.ref(cluster, lambda _, key=key: _VIEWS.pop(key, None)), view)  # type: ignore[misc]
    return view


_VIEW_LISTS: list[tuple[tuple[Cluster | HubCluster, ...], tuple[HubCluster, ...]]] = []


def _views(clusters: Sequence[Cluster | HubCluster]) -> tuple[HubCluster, ...]:
    """The views of ``clusters``, the same tuple for the same clusters (a repository's checks pass its clusters
    once per job). Holding the clusters keeps their ids from being reused."""
    members = tuple(clusters)
    if _VIEW_LISTS:
        cached, views = _VIEW_LISTS[0]
        if len(cached) == len(members) and all(map(operator.is_, cached, members)):
            return views
    views = tuple(_view(c) for c in members)
    _VIEW_LISTS[:] = [(members, views)]
    return views


# --- evaluation -----------------------------------------------------------------------------------------------


class _Misconfigured(Exception):
    """The Placement cannot be scheduled as written (OCM: PlacementMisconfigured=True, no decisions)."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"{plugin}:{message}")
        self.plugin = plugin
        self.message = message


def evaluate(
    spec: Mapping[str, Any],
    bound_cluster_sets: Iterable[str],
    clusters: Sequence[Cluster | HubCluster],
    *,
    explain: bool = True,
    context: HubContext = FIRST_PLACEMENT,
) -> PlacementResult:
    """Decide which of ``clusters`` the Placement with ``spec`` selects, as OCM's scheduler does, with a reason
    for each one left out, the Placement's conditions and its decision groups.

    ``bound_cluster_sets`` are the ManagedClusterSetBindings of the Placement's namespace; ``context`` carries
    the hub's PlacementDecisions and ManagedClusterSets (`HubContext`). ``explain=False`` selects the same, but
    stops at a cluster's first failing requirement and returns decisions for the selected clusters only: for
    checks that need just the selection (the repository's cross-file checks, at 1,000s of jobs).
    """
    views = _views(clusters)
    known_sets = context.cluster_sets
    bindings = sorted({s for s in bound_cluster_sets if known_sets is None or s in known_sets})
    wanted = list(spec.get("clusterSets") or [])
    eligible = sorted(set(bindings) & set(wanted)) if wanted else bindings
    member = _membership(eligible, known_sets)
    reasons: dict[str, list[Exclusion]] = {}
    pool: list[HubCluster] = []
    if explain:
        for view in views:
            if view.terminating:
                reasons[view.name] = [Exclusion("terminating", "being deleted: OCM never selects it")]
            elif member(view):
                pool.append(view)
            else:
                reasons[view.name] = [_outside(view, wanted, bindings, known_sets)]
        available = bool(pool)
    else:
        # Only the clusters holding a claim that each predicate requires can pass: look at those alone.
        holders = _claim_holders(spec.get("predicates") or [], views)
        pool = [v for v in (views if holders is None else holders) if not v.terminating and member(v)]
        available = bool(pool) or any(not v.terminating and member(v) for v in views)

    misconfigured: _Misconfigured | None = None
    own = context.own_decisions()
    weights: dict[str, int] = {}
    scores: dict[str, dict[str, int]] = {}
    ranked: list[HubCluster] = []
    try:
        feasible = _filter(spec, pool, available, own, context, reasons if explain else None)
        weights = _weights(spec)
        scores = _scores(weights, feasible, context, own)
        totals = {v.name: sum(weights[p] * s for p, s in scores[v.name].items()) for v in feasible}
        ranked = sorted(feasible, key=lambda v: (-totals[v.name], v.name))
    except _Misconfigured as error:
        misconfigured, ranked, totals = error, [], {}
        for view in pool if explain else ():
            reasons[view.name] = [Exclusion("misconfigured", f"the Placement is misconfigured: {error}")]

    limit = spec.get("numberOfClusters")
    chosen = ranked if limit is None else ranked[: max(int(limit), 0)]
    for view in ranked[len(chosen) :] if explain else ():
        message = f"cut by numberOfClusters={limit} after scoring (score {totals[view.name]})"
        reasons[view.name] = [Exclusion("numberOfClusters", message)]
    groups: tuple[DecisionGroup, ...] = ()
    if misconfigured is None:
        try:
            groups = _decision_groups(spec, chosen, context.name)
        except _Misconfigured as error:
            misconfigured = error  # OCM still counts the selected clusters, but writes no PlacementDecision
    unscheduled = int(limit) - len(chosen) if limit is not None else 0
    decisions = [ClusterDecision(v.name, True, totals[v.name], scores=scores[v.name]) for v in chosen]
    decisions += [
        ClusterDecision(
            name,
            False,
            totals.get(name),
            tuple(e.message for e in reasons[name]),
            tuple(reasons[name]),
            scores.get(name, {}),
        )
        for name in sorted(reasons)
    ]
    return PlacementResult(
        tuple(decisions),
        tuple(v.name for v in ranked),
        satisfied=_satisfied(wanted, eligible, bindings, available, chosen, unscheduled),
        misconfigured=_misconfigured_condition(misconfigured),
        decision_groups=groups,
        weights=weights,
        decisions_known=context.decisions_known,
        unscheduled=max(unscheduled, 0),
    )


def _membership(eligible: Sequence[str], known_sets: Mapping[str, ClusterSet] | None) -> Callable[[HubCluster], bool]:
    """Whether a cluster is a member of one of the eligible sets."""
    if known_sets is None or all(known_sets[s].selector_type != LABEL_SELECTOR for s in eligible):
        names = frozenset(eligible)  # exclusive sets only: one label lookup per cluster
        return lambda view: view.labels.get(CLUSTER_SET_LABEL) in names
    sets = [known_sets[s] for s in eligible]
    return lambda view: any(s.has_member(view) for s in sets)


def _outside(
    view: HubCluster, wanted: Sequence[str], bindings: Sequence[str], known_sets: Mapping[str, ClusterSet] | None
) -> Exclusion:
    """Why a cluster is not a candidate: the first of its sets' problems, as the existing messages word them."""
    label = view.labels.get(CLUSTER_SET_LABEL)
    if known_sets is None:
        member_of = [label] if label is not None else []
    else:
        member_of = sorted(name for name, s in known_sets.items() if s.has_member(view))
    if not member_of:
        if label is None:
            message = f"in no ManagedClusterSet (no {CLUSTER_SET_LABEL} label)"
        else:
            message = f"its cluster set {label!r} does not exist on the hub (no ManagedClusterSet of that name)"
        return Exclusion("clusterSet", message, CLUSTER_SET_LABEL)
    shown = ", ".join(repr(s) for s in member_of)
    noun = "cluster set" if len(member_of) == 1 else "cluster sets"
    verb = "is" if len(member_of) == 1 else "are"
    if wanted and not set(member_of) & set(wanted):
        return Exclusion("clusterSets", f"{noun} {shown} {verb} not among the job's clusterSets", member_of[0])
    if not set(member_of) & set(bindings):
        return Exclusion("clusterSetBinding", f"{noun} {shown} {verb} not bound to the namespace", member_of[0])
    # In several (label-selected) sets: some bound, some wanted, but none both.
    message = f"{noun} {shown}: none is both bound to the namespace and among the job's clusterSets"
    return Exclusion("clusterSets", message, member_of[0])


def _satisfied(
    wanted: Sequence[str],
    eligible: Sequence[str],
    bindings: Sequence[str],
    available: bool,
    chosen: Sequence[HubCluster],
    unscheduled: int,
) -> Condition:
    """``PlacementSatisfied`` as OCM's scheduling controller sets it (newSatisfiedCondition), in its order."""
    kind = "PlacementSatisfied"
    if not bindings:
        return Condition(
            kind,
            False,
            "NoManagedClusterSetBindings",
            "No valid ManagedClusterSetBindings found in placement namespace",
        )
    if not eligible:
        message = f"None of ManagedClusterSets [{','.join(wanted)}] is bound to placement namespace"
        return Condition(kind, False, "NoIntersection", message)
    if not available:
        message = f"All ManagedClusterSets [{','.join(eligible)}] have no member ManagedCluster"
        return Condition(kind, False, "AllManagedClusterSetsEmpty", message)
    if not chosen:
        return Condition(
            kind, False, "NoManagedClusterMatched", "No ManagedCluster matches any of the cluster predicate"
        )
    if unscheduled <= 0:
        return Condition(kind, True, "AllDecisionsScheduled", "All cluster decisions scheduled")
    return Condition(kind, False, "NotAllDecisionsScheduled", f"{unscheduled} cluster decisions unscheduled")


def _misconfigured_condition(error: _Misconfigured | None) -> Condition:
    kind = "PlacementMisconfigured"
    if error is None:
        return Condition(kind, False, "Succeedconfigured", "Placement configurations check pass")
    return Condition(kind, True, "Misconfigured", str(error))


# --- filters: Predicate, then TaintToleration ----------------------------------------------------------------


def _filter(
    spec: Mapping[str, Any],
    pool: Sequence[HubCluster],
    available: bool,
    own: set[str],
    context: HubContext,
    reasons: dict[str, list[Exclusion]] | None,
) -> list[HubCluster]:
    """The clusters of ``pool`` passing OCM's filters; with ``reasons``, why each other one failed them.
    ``available``: whether the Placement has any candidate at all (``pool`` may hold only some of them)."""
    predicates = spec.get("predicates") or []
    tolerations = spec.get("tolerations") or []
    if not available:
        return []  # OCM's filters return before checking their configuration when there is no cluster
    selectors = [p.get("requiredClusterSelector") or {} for p in predicates]
    for selector in selectors:
        _check_selector(selector)
    _check_tolerations(tolerations)
    now = context.now or datetime.datetime.now(datetime.UTC)
    if reasons is None:
        return [
            view
            for view in pool
            if (not selectors or any(_predicate_matches(s, view) for s in selectors))
            and _tolerated(view, tolerations, view.name in own, now) is None
        ]
    feasible: list[HubCluster] = []
    for view in pool:
        failures = [_predicate_failures(s, view) for s in selectors]
        if failures and all(failures):  # every ORed predicate failed: report the first one's reasons
            reasons[view.name] = failures[0]
            continue
        taint = _tolerated(view, tolerations, view.name in own, now)
        if taint is not None:
            message = f"taint {taint.key}{'=' + taint.value if taint.value else ''}:{taint.effect} not tolerated"
            reasons[view.name] = [Exclusion("tolerations", message, taint.key)]
            continue
        feasible.append(view)
    return feasible


_OPERATORS_WITH_VALUES = ("In", "NotIn")
_OPERATORS_WITHOUT_VALUES = ("Exists", "DoesNotExist")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _check_selector(selector: Mapping[str, Any]) -> None:
    """Raise `_Misconfigured` where OCM's Predicate plugin fails to build the selector: a label or claim
    selector that Kubernetes' LabelSelectorAsSelector refuses, or a CEL expression that does not compile."""
    label_selector = selector.get("labelSelector") or {}
    for key, value in (label_selector.get("matchLabels") or {}).items():
        _check_requirement({"key": key, "operator": "In", "values": [value]})
    for requirement in label_selector.get("matchExpressions") or []:
        _check_requirement(requirement)
    for requirement in (selector.get("claimSelector") or {}).get("matchExpressions") or []:
        _check_requirement(requirement)
    for expression in (selector.get("celSelector") or {}).get("celExpressions") or []:
        _cel_predicate(expression)  # raises _Misconfigured when it does not compile


def _check_requirement(requirement: Mapping[str, Any]) -> None:
    key, operator, values = requirement.get("key", ""), requirement.get("operator"), requirement.get("values") or []
    problem = label_key_problem(str(key))
    if problem is not None:
        raise _Misconfigured("Predicate", f"key: Invalid value: {key!r}: {problem}")
    if operator in _OPERATORS_WITH_VALUES and not values:
        raise _Misconfigured(
            "Predicate", f"values: Invalid value: for 'in', 'notin' operators, values set can't be empty ({key})"
        )
    if operator in _OPERATORS_WITHOUT_VALUES and values:
        raise _Misconfigured(
            "Predicate", f"values: Invalid value: values set must be empty for exists and does not exist ({key})"
        )
    if operator not in _OPERATORS_WITH_VALUES + _OPERATORS_WITHOUT_VALUES:
        raise _Misconfigured("Predicate", f"{operator!r} is not a valid label selector operator")
    for value in values:
        if len(str(value)) > 63 or _LABEL_VALUE.fullmatch(str(value)) is None:
            raise _Misconfigured("Predicate", f"values[0][{key}]: Invalid value: {value!r}: not a label value")


def _check_tolerations(tolerations: Sequence[Mapping[str, Any]]) -> None:
    for toleration in tolerations:
        operator = toleration.get("operator") or "Equal"
        if not toleration.get("key") and operator != "Exists":
            raise _Misconfigured("TaintToleration", "If the key is empty, operator must be Exists.")
        if operator == "Exists" and toleration.get("value"):
            raise _Misconfigured("TaintToleration", "If the operator is Exists, the value should be empty.")


def _tolerated(
    view: HubCluster, tolerations: Sequence[Mapping[str, Any]], chosen_before: bool, now: datetime.datetime
) -> Taint | None:
    """The first of the cluster's taints that keeps it out, or None."""
    for taint in view.taints:
        if taint.effect == "PreferNoSelect":
            continue  # not implemented by OCM: such clusters are always selected
        if taint.effect == "NoSelectIfNew" and chosen_before:
            continue
        if not any(_tolerates(t, taint, now) for t in tolerations):
            return taint
    return None


def _tolerates(toleration: Mapping[str, Any], taint: Taint, now: datetime.datetime) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.effect:
        return False
    if toleration.get("key") and toleration["key"] != taint.key:
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Equal" and (toleration.get("value") or "") != taint.value:
        return False
    if operator not in ("Equal", "Exists"):
        return False
    seconds = toleration.get("tolerationSeconds")
    if seconds is None:
        return True
    if taint.time_added is None:
        return False  # Go's zero time: the toleration ran out long ago
    return now < taint.time_added + datetime.timedelta(seconds=int(seconds))


_PRESENCE = ("Exists", "In")
_HOLDERS: list[tuple[tuple[HubCluster, ...], dict[str, list[HubCluster]]]] = []


def _claim_holders(predicates: Sequence[Mapping[str, Any]], views: tuple[HubCluster, ...]) -> list[HubCluster] | None:
    """The clusters that could pass some predicate, judged by one claim each requires to be present; None when a
    predicate requires none. Lets a check over 1,000 jobs look only at the clusters holding data."""
    required: list[str] = []
    for predicate in predicates:
        selector = (predicate.get("requiredClusterSelector") or {}).get("claimSelector") or {}
        keys = [req["key"] for req in selector.get("matchExpressions") or [] if req.get("operator") in _PRESENCE]
        if not keys:
            return None
        required.append(keys[0])
    if not required:
        return None
    # One cached index over the (cached) views: claim -> the clusters holding it, in order.
    if not _HOLDERS or _HOLDERS[0][0] is not views:
        index: dict[str, list[HubCluster]] = {}
        for view in views:
            for claim in view.claims:
                index.setdefault(claim, []).append(view)
        _HOLDERS[:] = [(views, index)]
    index = _HOLDERS[0][1]
    if len(required) == 1:
        return index.get(required[0], [])
    return list({id(v): v for claim in required for v in index.get(claim, [])}.values())


def _selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector over ``labels`` (its terms ANDed; an empty selector matches everything)."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    return all(_expression_matches(req, labels) for req in selector.get("matchExpressions") or [])


def _predicate_matches(selector: Mapping[str, Any], view: HubCluster) -> bool:
    """`_predicate_failures` is empty, decided without building any reason; cheapest requirements first."""
    claim_selector = selector.get("claimSelector") or {}
    if not all(_expression_matches(req, view.claims) for req in claim_selector.get("matchExpressions") or []):
        return False
    if not _selector_matches(selector.get("labelSelector") or {}, view.labels):
        return False
    expressions = (selector.get("celSelector") or {}).get("celExpressions") or []
    return all(_cel_predicate(expression)(view) for expression in expressions)


def _predicate_failures(selector: Mapping[str, Any], view: HubCluster) -> list[Exclusion]:
    labels, claims = view.labels, view.claims
    failures: list[Exclusion] = []
    label_selector = selector.get("labelSelector") or {}
    for key, value in sorted((label_selector.get("matchLabels") or {}).items()):
        if labels.get(key) != value:
            message = f"label {key}={value} required, cluster has {_show(labels.get(key))}"
            failures.append(Exclusion("labelSelector", message, key))
    for req in label_selector.get("matchExpressions") or []:
        if not _expression_matches(req, labels):
            message = f"label selector {_describe(req)} not met (cluster has {_show(labels.get(req['key']))})"
            failures.append(Exclusion("labelSelector", message, req["key"]))
    for req in (selector.get("claimSelector") or {}).get("matchExpressions") or []:
        if not _expression_matches(req, claims):
            message = f"claim selector {_describe(req)} not met (cluster has {_show(claims.get(req['key']))})"
            failures.append(Exclusion("claimSelector", message, req["key"]))
    for expression in (selector.get("celSelector") or {}).get("celExpressions") or []:
        if not _cel_predicate(expression)(view):
            failures.append(Exclusion("celSelector", f"CEL selector not met: {expression}"))
    return failures


def _expression_matches(req: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    key, operator, allowed = req["key"], req["operator"], req.get("values") or []
    if operator == "Exists":
        return key in values
    if operator == "DoesNotExist":
        return key not in values
    if operator == "In":
        return key in values and values[key] in allowed
    if operator == "NotIn":
        return key not in values or values[key] not in allowed
    raise ValueError(f"unknown selector operator {operator!r}")


def _describe(req: Mapping[str, Any]) -> str:
    values = req.get("values")
    return f"{req['key']} {req['operator']}" + (f" {list(values)}" if values else "")


def _show(value: str | None) -> str:
    return "none" if value is None else repr(value)


# The one CEL shape `placement_spec` writes: a claim whose value, read as an integer, is at least N.
_CLAIM_AT_LEAST = re.compile(
    r'managedCluster\.status\.clusterClaims\.exists\(c, c\.name == "([^"\\]+)" && int\(c\.value\) >= (-?[0-9]+)\)'
)
_CEL_INT = re.compile(r"[+-]?[0-9]+")
_INT64 = range(-(2**63), 2**63)


@cache
def _cel_predicate(expression: str) -> Callable[[HubCluster], bool]:
    """The expression compiled once into a predicate over a cluster; `_Misconfigured` when it does not compile.

    cel-python takes milliseconds per evaluation, which a repository of 1,000 jobs x 500 clusters cannot
    afford; the shape `placement_spec` writes is evaluated natively instead, with cel-go's semantics (`int()` of
    a string accepts a signed decimal int64, anything else is an error, and an error selects nothing). A test
    checks that both paths agree; every other expression goes through cel-python.
    """
    match = _CLAIM_AT_LEAST.fullmatch(expression)
    if match is not None and int(match.group(2)) in _INT64:
        claim, minimum = match.group(1), int(match.group(2))

        def at_least(view: HubCluster) -> bool:
            value = view.claims.get(claim)
            if value is None or _CEL_INT.fullmatch(value) is None or int(value) not in _INT64:
                return False  # no such claim, or int() would be a CEL error
            return int(value) >= minimum

        return at_least
    return partial(_cel_true, _cel_program(expression))


def _cel_program(expression: str) -> Any:
    import celpy  # cel-python; imported here so that the Flower apps never pay for it
    from celpy.celparser import CELParseError

    environment = celpy.Environment()
    try:
        return environment.program(environment.compile(expression))
    except CELParseError as error:
        raise _Misconfigured("Predicate", f"compilation failed: {error}") from error


def _cel_true(program: Any, view: HubCluster) -> bool:
    import celpy
    from celpy.adapter import json_to_cel
    from celpy.evaluation import CELEvalError

    activation = {"managedCluster": json_to_cel(view.managed_cluster)}
    try:
        result = program.evaluate(activation)
    except CELEvalError:
        return False  # as OCM: an expression that errors on a cluster does not select it
    return isinstance(result, bool | celpy.celtypes.BoolType) and bool(result)


# --- prioritizers -------------------------------------------------------------------------------------------


def _weights(spec: Mapping[str, Any]) -> dict[str, int]:
    """The prioritizers in effect and their weights (OCM's getWeights and getPrioritizers), in a fixed order:
    Balance, Steady, then the configured ones as listed. Weight 0 turns a prioritizer off."""
    policy = spec.get("prioritizerPolicy") or {}
    mode = policy.get("mode") or "Additive"
    if mode == "Additive":
        weights = {"Balance": 1, "Steady": 1}
    elif mode == "Exact":
        weights = {}
    else:
        raise _Misconfigured("", f"incorrect prioritizer policy mode: {mode}")
    for configuration in policy.get("configurations") or []:
        coordinate = configuration.get("scoreCoordinate")
        if not coordinate:
            raise _Misconfigured("", "scoreCoordinate field is required")
        weights[_prioritizer_name(coordinate)] = int(configuration.get("weight", 1))
    for name, weight in weights.items():
        if weight == 0:
            continue
        if name.startswith("AddOn/"):
            if name == "AddOn/":
                raise _Misconfigured("", "addOn should not be empty")
        elif name not in BUILT_IN_PRIORITIZERS:
            raise _Misconfigured("", f"incorrect builtin prioritizer: {name}")
    return {name: weight for name, weight in weights.items() if weight != 0}


def _prioritizer_name(coordinate: Mapping[str, Any]) -> str:
    if (coordinate.get("type") or "BuiltIn") == "BuiltIn":
        return str(coordinate.get("builtIn", ""))
    addon = coordinate.get("addOn") or {}
    return f"AddOn/{addon.get('resourceName', '')}/{addon.get('scoreName', '')}" if addon else "AddOn/"


def _scores(
    weights: Mapping[str, int], clusters: Sequence[HubCluster], context: HubContext, own: set[str]
) -> dict[str, dict[str, int]]:
    """Each prioritizer's score of each cluster (before weights)."""
    scores: dict[str, dict[str, int]] = {v.name: {} for v in clusters}
    for name in weights:
        if name == "Balance":
            part = _balance(clusters, context.other_counts())
        elif name == "Steady":
            part = {v.name: MAX_SCORE if v.name in own else 0 for v in clusters}
        elif name in ("ResourceAllocatableCPU", "ResourceAllocatableMemory"):
            part = _allocatable(clusters, "cpu" if name.endswith("CPU") else "memory")
        else:
            # AddOnPlacementScores are the add-ons' to report: none here, so every cluster scores 0.
            part = {v.name: 0 for v in clusters}
        for cluster, score in part.items():
            scores[cluster][name] = score
    return scores


def _balance(clusters: Sequence[HubCluster], counts: Mapping[str, int]) -> dict[str, int]:
    top = max(counts.values(), default=0)
    out: dict[str, int] = {}
    for view in clusters:
        count = counts.get(view.name)
        # OCM truncates before doubling: 2 * int64(100 * (0.5 - usage)).
        out[view.name] = MAX_SCORE if count is None else 2 * int(MAX_SCORE * (0.5 - count / top))
    return out


def _allocatable(clusters: Sequence[HubCluster], resource: str) -> dict[str, int]:
    # A cluster reporting no allocatable or no capacity of the resource is left out of the range and unscored.
    amounts = {
        v.name: v.allocatable[resource] for v in clusters if resource in v.allocatable and resource in v.capacity
    }
    low, high = min(amounts.values(), default=0.0), max(amounts.values(), default=0.0)
    out: dict[str, int] = {}
    for name, amount in amounts.items():
        # int64(((value - min) / (max - min) - 0.5) * 2 * 100), truncated toward zero; all equal -> 100.
        out[name] = MAX_SCORE if high == low else int(((amount - low) / (high - low) - 0.5) * 2.0 * 100.0)
    return out


# --- decision groups ------------------------------------------------------------------------------------------


def _decision_groups(
    spec: Mapping[str, Any], chosen: Sequence[HubCluster], placement: str
) -> tuple[DecisionGroup, ...]:
    """The decision groups and PlacementDecisions OCM writes for the chosen clusters."""
    strategy = ((spec.get("decisionStrategy") or {}).get("groupStrategy")) or {}
    length = _group_length(strategy.get("clustersPerDecisionGroup"), len(chosen))
    remaining = {v.name for v in chosen}
    groups: list[tuple[str, list[str]]] = []
    for group in strategy.get("decisionGroups") or []:
        selector = group.get("groupClusterSelector") or {}
        _check_selector({k: v for k, v in selector.items() if k in ("labelSelector", "claimSelector")})
        matched = [
            v.name
            for v in chosen
            if v.name in remaining
            and _selector_matches(selector.get("labelSelector") or {}, v.labels)
            and _selector_matches(
                {"matchExpressions": (selector.get("claimSelector") or {}).get("matchExpressions")}, v.claims
            )
        ]
        remaining -= set(matched)
        groups += _divide(str(group.get("groupName", "")), matched, length)
    groups += _divide("", list(remaining), length)
    if not groups:
        groups = [("", [])]  # OCM always writes one PlacementDecision, empty when nothing is selected
    out: list[DecisionGroup] = []
    index = 1
    for position, (name, clusters) in enumerate(groups):
        pages = [clusters[i : i + MAX_DECISIONS_PER_OBJECT] for i in range(0, len(clusters), MAX_DECISIONS_PER_OBJECT)]
        names = tuple(f"{placement}-decision-{index + i}" for i in range(max(len(pages), 1)))
        index += len(names)
        out.append(DecisionGroup(position, name, tuple(clusters), names))
    return tuple(out)


def _group_length(value: Any, total: int) -> int:
    """``clustersPerDecisionGroup``: a number, or a percentage of the chosen clusters rounded up; out of range
    (or unset): all of them in one group."""
    length = total
    if isinstance(value, int):
        length = value
    elif isinstance(value, str):
        if not value.endswith("%"):
            raise _Misconfigured("", f"{value} invalid type: string is not a percentage")
        try:
            length = math.ceil(float(value[:-1]) / 100 * total)
        except ValueError as error:
            raise _Misconfigured("", f"{value} invalid type: string is not a percentage") from error
    return total if length <= 0 or length > total else length


def _divide(name: str, clusters: list[str], length: int) -> list[tuple[str, list[str]]]:
    ordered = sorted(clusters)
    return [(name, ordered[i : i + length]) for i in range(0, len(ordered), max(length, 1))]
