"""OCM Placement for a job: the one builder of its spec, and the one evaluator of a Placement spec.

The renderer writes exactly the spec `placement_spec` returns; the cross-file checks and ``fleet plan``
evaluate that spec with `evaluate`, with OCM's semantics, over the clusters of ``clusters/``. There is no
second copy of the placement rules.

Semantics (open-cluster-management.io/api cluster/v1beta1 Placement):
- candidate clusters are those in the ManagedClusterSets that are both bound to the namespace and listed in
  ``spec.clusterSets`` (all bound sets when the list is empty);
- ``predicates`` are ORed; inside one ``requiredClusterSelector`` the label, claim and CEL selectors are ANDed;
- prioritizers score the remaining clusters (built-in ``ResourceAllocatableCPU``/``Memory`` normalise the
  allocatable amount to [-100, 100] across the candidates, truncated to an integer as OCM's int64 scores are;
  all equal -> 100) and ``numberOfClusters`` keeps the best, ties broken by cluster name. ``Balance`` and
  ``Steady`` (on by default in Additive mode) score from live PlacementDecisions, which a repository does not
  have: for a first placement they score every cluster alike, so they are left out.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

from fleet.claims import CPU_CLAIM, GPU_CLAIM, MEMORY_CLAIM, cluster_claims, dataset_claim
from fleet.models import Cluster, DataLocalityPolicy, Job

CLUSTER_SET_LABEL = "cluster.open-cluster-management.io/clusterset"
PRIORITIZERS = ("ResourceAllocatableCPU", "ResourceAllocatableMemory")


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


# --- evaluation -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exclusion:
    """One Placement rule that leaves a cluster out."""

    rule: str
    """The Placement field at fault: ``clusterSets``, ``clusterSetBinding``, ``labelSelector``,
    ``claimSelector``, ``celSelector`` or ``numberOfClusters``."""
    message: str
    key: str = ""
    """The label or claim key of a failed selector expression."""


@dataclass(frozen=True)
class ClusterDecision:
    cluster: str
    selected: bool
    score: float | None = None
    reasons: tuple[str, ...] = ()
    """Why the cluster is out (empty when selected)."""
    exclusions: tuple[Exclusion, ...] = ()
    """The same reasons, each with the rule it comes from."""


@dataclass(frozen=True)
class PlacementResult:
    decisions: tuple[ClusterDecision, ...]
    """One per cluster given, selected ones first in decision order, then the rest by name."""
    feasible: tuple[str, ...] = field(default=())
    """Clusters passing every filter, before numberOfClusters cut the list."""

    @property
    def selected(self) -> list[str]:
        return [d.cluster for d in self.decisions if d.selected]


def managed_cluster(cluster: Cluster) -> dict[str, Any]:
    """The ManagedCluster (as the hub would see it) for a cluster definition: labels, set label and claims."""
    labels = dict(cluster.labels)
    labels[CLUSTER_SET_LABEL] = cluster.cluster_set
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {"name": cluster.name, "labels": labels},
        "status": {
            "allocatable": {"cpu": str(cluster.capacity.cpu), "memory": str(cluster.capacity.memory)},
            "clusterClaims": [{"name": k, "value": v} for k, v in cluster_claims(cluster).items()],
        },
    }


@dataclass(frozen=True)
class _ClusterView:
    """What selectors read of one cluster, built once per cluster rather than once per job."""

    managed_cluster: dict[str, Any]
    labels: dict[str, str]
    claims: dict[str, str]


_VIEWS: dict[int, tuple[weakref.ref[Cluster], _ClusterView]] = {}


def _view(cluster: Cluster) -> _ClusterView:
    # Definitions are frozen but not hashable (they hold dicts): cache by identity, dropped with the object.
    key = id(cluster)
    entry = _VIEWS.get(key)
    if entry is not None and entry[0]() is cluster:
        return entry[1]
    mc = managed_cluster(cluster)
    view = _ClusterView(mc, mc["metadata"]["labels"], {c["name"]: c["value"] for c in mc["status"]["clusterClaims"]})
    _VIEWS[key] = (weakref.ref(cluster, lambda _, key=key: _VIEWS.pop(key, None)), view)  # type: ignore[misc]
    return view


def evaluate(
    spec: Mapping[str, Any], bound_cluster_sets: Iterable[str], clusters: Sequence[Cluster], *, explain: bool = True
) -> PlacementResult:
    """Decide which of ``clusters`` the Placement with ``spec`` selects, with a reason for each one left out.

    ``explain=False`` selects the same, but stops at a cluster's first failing requirement and returns
    decisions for the selected clusters only: for checks that need just the selection (the repository's
    cross-file checks, at 1,000s of jobs).
    """
    bound = set(bound_cluster_sets)
    wanted_sets = set(spec.get("clusterSets") or bound)
    predicates = spec.get("predicates") or [{}]
    reasons: dict[str, list[Exclusion]] = {}
    feasible: list[Cluster] = []
    if not explain:
        candidates = _claim_holders(predicates, clusters)
        feasible = [
            cluster
            for cluster in clusters
            if (candidates is None or id(cluster) in candidates)
            and cluster.cluster_set in wanted_sets
            and cluster.cluster_set in bound
            and any(_predicate_matches(p.get("requiredClusterSelector") or {}, _view(cluster)) for p in predicates)
        ]
    for cluster in clusters if explain else ():
        out: list[Exclusion] = []
        if cluster.cluster_set not in wanted_sets:
            message = f"cluster set {cluster.cluster_set!r} is not among the job's clusterSets"
            out.append(Exclusion("clusterSets", message, cluster.cluster_set))
        elif cluster.cluster_set not in bound:
            message = f"cluster set {cluster.cluster_set!r} is not bound to the namespace"
            out.append(Exclusion("clusterSetBinding", message, cluster.cluster_set))
        else:
            view = _view(cluster)
            failures = [_predicate_failures(p.get("requiredClusterSelector") or {}, view) for p in predicates]
            if all(failures):  # every ORed predicate failed: report the first one's reasons
                out.extend(failures[0])
        if out:
            reasons[cluster.name] = out
        else:
            feasible.append(cluster)

    scores = _scores(spec, feasible)
    ranked = sorted(feasible, key=lambda c: (-scores[c.name], c.name))
    limit = spec.get("numberOfClusters")
    chosen = ranked if limit is None else ranked[:limit]
    for cluster in ranked[len(chosen) :] if explain else ():
        message = f"cut by numberOfClusters={limit} after scoring (score {scores[cluster.name]:.0f})"
        reasons[cluster.name] = [Exclusion("numberOfClusters", message)]
    decisions = [ClusterDecision(c.name, True, scores[c.name]) for c in chosen]
    decisions += [
        ClusterDecision(name, False, scores.get(name), tuple(e.message for e in reasons[name]), tuple(reasons[name]))
        for name in sorted(reasons)
    ]
    return PlacementResult(tuple(decisions), tuple(c.name for c in ranked))


_PRESENCE = ("Exists", "In")
_HOLDERS: list[tuple[tuple[Cluster, ...], dict[str, set[int]]]] = []


def _claim_holders(predicates: Sequence[Mapping[str, Any]], clusters: Sequence[Cluster]) -> set[int] | None:
    """The ids of the clusters that could pass some predicate, judged by one claim each requires to be present;
    None when a predicate requires none. Lets a check over 1,000 jobs look only at the clusters holding data."""
    required: list[str] = []
    for predicate in predicates:
        selector = (predicate.get("requiredClusterSelector") or {}).get("claimSelector") or {}
        keys = [req["key"] for req in selector.get("matchExpressions") or [] if req.get("operator") in _PRESENCE]
        if not keys:
            return None
        required.append(keys[0])
    members = tuple(clusters)
    # One cached index: claim -> clusters holding it. Holding the clusters keeps their ids from being reused.
    if (
        not _HOLDERS
        or len(_HOLDERS[0][0]) != len(members)
        or any(a is not b for a, b in zip(_HOLDERS[0][0], members, strict=True))
    ):
        index: dict[str, set[int]] = {}
        for cluster in members:
            for claim in _view(cluster).claims:
                index.setdefault(claim, set()).add(id(cluster))
        _HOLDERS[:] = [(members, index)]
    index = _HOLDERS[0][1]
    return set().union(*(index.get(claim, set()) for claim in required))


def _predicate_matches(selector: Mapping[str, Any], view: _ClusterView) -> bool:
    """`_predicate_failures` is empty, decided without building any reason; cheapest requirements first."""
    claim_selector = selector.get("claimSelector") or {}
    if not all(_expression_matches(req, view.claims) for req in claim_selector.get("matchExpressions") or []):
        return False
    label_selector = selector.get("labelSelector") or {}
    labels = view.labels
    if any(labels.get(key) != value for key, value in (label_selector.get("matchLabels") or {}).items()):
        return False
    if not all(_expression_matches(req, labels) for req in label_selector.get("matchExpressions") or []):
        return False
    expressions = (selector.get("celSelector") or {}).get("celExpressions") or []
    return all(_cel_predicate(expression)(view) for expression in expressions)


def _predicate_failures(selector: Mapping[str, Any], view: _ClusterView) -> list[Exclusion]:
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
def _cel_predicate(expression: str) -> Callable[[_ClusterView], bool]:
    """The expression compiled once into a predicate over a cluster.

    cel-python takes milliseconds per evaluation, which a repository of 1,000 jobs x 500 clusters cannot
    afford; the shape `placement_spec` writes is evaluated natively instead, with CEL's semantics (`int()` of a
    string accepts a signed decimal int64, anything else is an error, and an error selects nothing). A test
    checks that both paths agree; every other expression goes through cel-python.
    """
    match = _CLAIM_AT_LEAST.fullmatch(expression)
    if match is not None:
        claim, minimum = match.group(1), int(match.group(2))

        def at_least(view: _ClusterView) -> bool:
            value = view.claims.get(claim)
            if value is None or _CEL_INT.fullmatch(value) is None or int(value) not in _INT64:
                return False  # no such claim, or int() would be a CEL error
            return int(value) >= minimum

        return at_least
    return partial(_cel_true, _cel_program(expression))


def _cel_program(expression: str) -> Any:
    import celpy  # cel-python; imported here so that the Flower apps never pay for it

    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def _cel_true(program: Any, view: _ClusterView) -> bool:
    import celpy
    from celpy.adapter import json_to_cel
    from celpy.evaluation import CELEvalError

    activation = {"managedCluster": json_to_cel(view.managed_cluster)}
    try:
        result = program.evaluate(activation)
    except CELEvalError:
        return False  # as OCM: an expression that errors on a cluster does not select it
    return isinstance(result, bool | celpy.celtypes.BoolType) and bool(result)


def _scores(spec: Mapping[str, Any], clusters: Sequence[Cluster]) -> dict[str, float]:
    scores = {c.name: 0.0 for c in clusters}
    policy = spec.get("prioritizerPolicy") or {}
    for configuration in policy.get("configurations") or []:
        coordinate = configuration.get("scoreCoordinate") or {}
        weight = configuration.get("weight", 1)
        amount = {
            "ResourceAllocatableCPU": lambda c: float(c.capacity.cpu.value),
            "ResourceAllocatableMemory": lambda c: float(c.capacity.memory.value),
        }.get(coordinate.get("builtIn", ""))
        if amount is None:  # other prioritizers score from live hub state that a repository does not have
            continue
        values = {c.name: amount(c) for c in clusters}
        low, high = min(values.values(), default=0.0), max(values.values(), default=0.0)
        for name, value in values.items():
            # OCM: int64(((value - min) / (max - min) - 0.5) * 200), truncated toward zero; all equal -> 100.
            normalised = 100 if high == low else int(((value - low) / (high - low) - 0.5) * 2.0 * 100.0)
            scores[name] += weight * normalised
    return scores
