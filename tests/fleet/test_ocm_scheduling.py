"""OCM's published scheduling behaviour, as table tests over the one evaluator (`fleet.placement.evaluate`).

Each case states a rule as OCM's documentation or API comments state it, or as its placement controller does
it, and the outcome OCM gives; the source is named in the case. Sources (open-cluster-management-io):
- [docs] open-cluster-management.io, Concepts: Placement and ManagedClusterSet;
- [api] the Placement CRD's field descriptions (cluster/v1beta1, as installed from ../shared/crds);
- [ocm] ocm, pkg/placement: controllers/scheduling (schedule.go, scheduling_controller.go) and the plugins
  predicate, tainttoleration, balance, steady, resource.

The last cases are the three places where ``fleet plan`` and OCM disagreed (issue 10), with OCM's outcome.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleet.placement import (
    CLUSTER_SET_LABEL,
    ClusterSet,
    HubCluster,
    HubContext,
    PlacementResult,
    PriorDecision,
    Taint,
    evaluate,
    placement_spec,
)
from fleet.repository import Repository, load_repository

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
CPU = {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "ResourceAllocatableCPU"}, "weight": 1}
MEMORY = {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "ResourceAllocatableMemory"}, "weight": 1}


def cluster(
    name: str,
    cluster_set: str | None = "s",
    *,
    labels: dict[str, str] | None = None,
    claims: dict[str, str] | None = None,
    cpu: float | None = 4,
    memory: float | None = 8 * 2**30,
    taints: tuple[Taint, ...] = (),
    terminating: bool = False,
) -> HubCluster:
    """A ManagedCluster as the hub reports it."""
    all_labels = dict(labels or {})
    if cluster_set is not None:
        all_labels[CLUSTER_SET_LABEL] = cluster_set
    resources = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    claim_list = [{"name": k, "value": v} for k, v in (claims or {}).items()]
    return HubCluster(
        name=name,
        labels=all_labels,
        claims=dict(claims or {}),
        managed_cluster={
            "metadata": {"name": name, "labels": all_labels},
            "status": {"clusterClaims": claim_list, "allocatable": resources},
        },
        allocatable=dict(resources),
        capacity=dict(resources),
        taints=taints,
        terminating=terminating,
    )


def decided(namespace: str, placement: str, *clusters: str) -> PriorDecision:
    return PriorDecision(namespace, placement, clusters)


@dataclass(frozen=True)
class Case:
    id: str
    source: str
    spec: dict[str, Any]
    clusters: list[HubCluster]
    selected: list[str]
    """In rank order."""
    reason: str
    """PlacementSatisfied's reason."""
    bound: tuple[str, ...] = ("s",)
    context: HubContext = field(default_factory=lambda: HubContext("ns", "p", now=NOW))
    message: str | None = None
    """PlacementSatisfied's message, where the case is about it."""
    scores: dict[str, dict[str, int]] | None = None
    """Each cluster's per-prioritizer scores, where the case is about them."""
    totals: dict[str, int] | None = None
    groups: list[tuple[str, list[str], list[str]]] | None = None
    """(group name, clusters, PlacementDecision names), where the case is about them."""
    misconfigured: str | None = None
    """A fragment of PlacementMisconfigured's message when it is True."""
    rules: dict[str, str] | None = None
    """Cluster -> the rule of its first exclusion, where the case is about it."""


def _context(**changes: Any) -> HubContext:
    fields: dict[str, Any] = {"namespace": "ns", "name": "p", "now": NOW}
    fields.update(changes)
    return HubContext(**fields)


CASES = [
    # --- cluster sets and bindings -------------------------------------------------------------------------
    Case(
        "no-bindings",
        "[ocm] scheduling_controller newSatisfiedCondition; [docs] Placement, Troubleshooting",
        {},
        [cluster("a")],
        [],
        "NoManagedClusterSetBindings",
        bound=(),
        message="No valid ManagedClusterSetBindings found in placement namespace",
    ),
    Case(
        "binding-to-a-missing-set-is-not-valid",
        "[ocm] getValidManagedClusterSetBindings ignores a binding whose ManagedClusterSet does not exist",
        {},
        [cluster("a")],
        [],
        "NoManagedClusterSetBindings",
        context=_context(cluster_sets={"other": ClusterSet("other")}),
    ),
    Case(
        "listed-sets-not-bound",
        "[api] clusterSets: the intersection of this slice and the sets bound to the namespace",
        {"clusterSets": ["x", "y"]},
        [cluster("a")],
        [],
        "NoIntersection",
        message="None of ManagedClusterSets [x,y] is bound to placement namespace",
    ),
    Case(
        "empty-cluster-sets-means-all-bound",
        "[api] clusterSets: if the slice is empty, clusters are selected from the sets bound to the namespace",
        {},
        [cluster("a", "s"), cluster("b", "t"), cluster("c", "u")],
        ["a", "b"],
        "AllDecisionsScheduled",
        bound=("s", "t"),
        rules={"c": "clusterSetBinding"},
    ),
    Case(
        "sets-without-members",
        "[ocm] newSatisfiedCondition: AllManagedClusterSetsEmpty when no eligible set has a member",
        {},
        [cluster("a", "elsewhere")],
        [],
        "AllManagedClusterSetsEmpty",
        message="All ManagedClusterSets [s] have no member ManagedCluster",
    ),
    Case(
        "label-selector-set",
        "[docs] ManagedClusterSet: a LabelSelector set (the global set's empty selector selects every cluster)",
        {},
        [cluster("a", None), cluster("b", "s")],
        ["a", "b"],
        "AllDecisionsScheduled",
        bound=("global",),
        context=_context(cluster_sets={"global": ClusterSet("global", "LabelSelector"), "s": ClusterSet("s")}),
    ),
    Case(
        "terminating-clusters-are-never-selected",
        "[docs] Placement: clusters in terminating state will not be selected (OCM v0.14.0)",
        {},
        [cluster("a"), cluster("b", terminating=True)],
        ["a"],
        "AllDecisionsScheduled",
        rules={"b": "terminating"},
    ),
    # --- predicates --------------------------------------------------------------------------------------
    Case(
        "predicates-are-ored-and-selectors-anded",
        "[docs] Placement, Predicates; [ocm] predicate: a cluster matching any requiredClusterSelector passes",
        {
            "predicates": [
                {
                    "requiredClusterSelector": {
                        "labelSelector": {"matchLabels": {"tier": "gpu"}},
                        "claimSelector": {"matchExpressions": [{"key": "d.fleet.dev", "operator": "Exists"}]},
                    }
                },
                {"requiredClusterSelector": {"labelSelector": {"matchLabels": {"tier": "big"}}}},
            ]
        },
        [
            cluster("gpu-with-data", labels={"tier": "gpu"}, claims={"d.fleet.dev": "/d"}),
            cluster("gpu-without-data", labels={"tier": "gpu"}),
            cluster("big", labels={"tier": "big"}),
        ],
        ["big", "gpu-with-data"],
        "AllDecisionsScheduled",
        rules={"gpu-without-data": "claimSelector"},
    ),
    Case(
        "cel-errors-select-nothing",
        "[ocm] helpers/cel.go: an expression that errors (cel-go int() of a non-decimal) or is not true is false",
        {
            "predicates": [
                {
                    "requiredClusterSelector": {
                        "celSelector": {
                            "celExpressions": [
                                'managedCluster.status.clusterClaims.exists(c, c.name == "n" && int(c.value) >= 2)'
                            ]
                        }
                    }
                }
            ]
        },
        [
            cluster("two", claims={"n": "2"}),
            cluster("hex", claims={"n": "0x10"}),
            cluster("spaced", claims={"n": " 5"}),
            cluster("past-int64", claims={"n": "9223372036854775808"}),
            cluster("one", claims={"n": "1"}),
        ],
        ["two"],
        "AllDecisionsScheduled",
        rules={"hex": "celSelector", "spaced": "celSelector", "past-int64": "celSelector", "one": "celSelector"},
    ),
    Case(
        "nothing-matches",
        "[ocm] newSatisfiedCondition: NoManagedClusterMatched",
        {"predicates": [{"requiredClusterSelector": {"labelSelector": {"matchLabels": {"tier": "gpu"}}}}]},
        [cluster("a")],
        [],
        "NoManagedClusterMatched",
        message="No ManagedCluster matches any of the cluster predicate",
    ),
    Case(
        "invalid-label-key-is-misconfigured",
        "[ocm] predicate: a selector LabelSelectorAsSelector refuses makes the Placement Misconfigured",
        {
            "predicates": [
                {
                    "requiredClusterSelector": {
                        "claimSelector": {"matchExpressions": [{"key": "a" * 64, "operator": "Exists"}]}
                    }
                }
            ]
        },
        [cluster("a")],
        [],
        "NoManagedClusterMatched",
        misconfigured="Predicate:key: Invalid value",
        rules={"a": "misconfigured"},
    ),
    Case(
        "in-without-values-is-misconfigured",
        "[ocm] predicate via LabelSelectorAsSelector: In/NotIn need values, Exists/DoesNotExist take none",
        {
            "predicates": [
                {
                    "requiredClusterSelector": {
                        "labelSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": []}]}
                    }
                }
            ]
        },
        [cluster("a")],
        [],
        "NoManagedClusterMatched",
        misconfigured="values set can't be empty",
    ),
    Case(
        "cel-that-does-not-compile-is-misconfigured",
        "[ocm] helpers/cel.go Compile: a compilation error makes the Placement Misconfigured",
        {"predicates": [{"requiredClusterSelector": {"celSelector": {"celExpressions": ["managedCluster.("]}}}]},
        [cluster("a")],
        [],
        "NoManagedClusterMatched",
        misconfigured="Predicate:compilation failed",
    ),
    # --- taints and tolerations --------------------------------------------------------------------------
    Case(
        "no-select-taint-repels",
        "[docs] Placement, Taints/Tolerations: by default the placement won't select a NoSelect-tainted cluster",
        {},
        [cluster("a"), cluster("b", taints=(Taint("gpu", "true", "NoSelect"),))],
        ["a"],
        "AllDecisionsScheduled",
        rules={"b": "tolerations"},
    ),
    Case(
        "matching-toleration",
        "[docs] tolerations: Equal matches key and value; Exists any value of the key",
        {"tolerations": [{"key": "gpu", "operator": "Equal", "value": "true"}, {"key": "zone", "operator": "Exists"}]},
        [
            cluster("a", taints=(Taint("gpu", "true", "NoSelect"),)),
            cluster("b", taints=(Taint("gpu", "false", "NoSelect"),)),
            cluster("c", taints=(Taint("zone", "x", "NoSelect"),)),
        ],
        ["a", "c"],
        "AllDecisionsScheduled",
        rules={"b": "tolerations"},
    ),
    Case(
        "toleration-seconds-run-from-time-added",
        "[docs] tolerationSeconds counts from the taint's timeAdded",
        {
            "tolerations": [
                {
                    "key": "cluster.open-cluster-management.io/unreachable",
                    "operator": "Exists",
                    "tolerationSeconds": 300,
                }
            ]
        },
        [
            cluster(
                "recent",
                taints=(
                    Taint(
                        "cluster.open-cluster-management.io/unreachable",
                        "",
                        "NoSelect",
                        NOW - datetime.timedelta(seconds=60),
                    ),
                ),
            ),
            cluster(
                "long-gone",
                taints=(
                    Taint(
                        "cluster.open-cluster-management.io/unreachable",
                        "",
                        "NoSelect",
                        NOW - datetime.timedelta(seconds=600),
                    ),
                ),
            ),
        ],
        ["recent"],
        "AllDecisionsScheduled",
        rules={"long-gone": "tolerations"},
    ),
    Case(
        "prefer-no-select-is-not-implemented",
        "[docs] PreferNoSelect is not implemented yet: such clusters are always selected",
        {},
        [cluster("a", taints=(Taint("k", "v", "PreferNoSelect"),))],
        ["a"],
        "AllDecisionsScheduled",
    ),
    Case(
        "no-select-if-new-keeps-earlier-choices",
        "[ocm] tainttoleration: NoSelectIfNew does not repel a cluster the Placement's decisions already name",
        {},
        [
            cluster("kept", taints=(Taint("k", "", "NoSelectIfNew"),)),
            cluster("new", taints=(Taint("k", "", "NoSelectIfNew"),)),
        ],
        ["kept"],
        "AllDecisionsScheduled",
        context=_context(decisions=(decided("ns", "p", "kept"),), decisions_known=True),
        rules={"new": "tolerations"},
    ),
    Case(
        "empty-key-needs-exists",
        "[ocm] tainttoleration: if the key is empty, operator must be Exists",
        {"tolerations": [{"operator": "Equal", "value": "x"}]},
        [cluster("a")],
        [],
        "NoManagedClusterMatched",
        misconfigured="TaintToleration:If the key is empty, operator must be Exists.",
    ),
    # --- prioritizers ----------------------------------------------------------------------------------------
    Case(
        "additive-mode-adds-balance-and-steady",
        "[api] prioritizerPolicy.mode: in Additive (the default) Steady and Balance weigh 1",
        {"prioritizerPolicy": {"configurations": [CPU]}},
        [cluster("big", cpu=16), cluster("small", cpu=4)],
        ["big", "small"],
        "AllDecisionsScheduled",
        scores={
            "big": {"Balance": 100, "Steady": 0, "ResourceAllocatableCPU": 100},
            "small": {"Balance": 100, "Steady": 0, "ResourceAllocatableCPU": -100},
        },
        totals={"big": 200, "small": 0},
    ),
    Case(
        "exact-mode-counts-only-what-is-listed",
        "[api] prioritizerPolicy.mode: in Exact mode any prioritizer not listed weighs zero",
        {"prioritizerPolicy": {"mode": "Exact", "configurations": [CPU]}},
        [cluster("big", cpu=16), cluster("small", cpu=4)],
        ["big", "small"],
        "AllDecisionsScheduled",
        scores={"big": {"ResourceAllocatableCPU": 100}, "small": {"ResourceAllocatableCPU": -100}},
    ),
    Case(
        "allocatable-normalised-and-truncated",
        "[ocm] resource: int64(((x - min) / (max - min) - 0.5) * 2 * 100), truncated toward zero",
        {"prioritizerPolicy": {"mode": "Exact", "configurations": [CPU]}},
        # (60.4 - 1) / 100 = 0.594 -> 18.8 -> 18; (13.25 - 1) / 100 = 0.1225 -> -75.5 -> -75.
        [cluster("max", cpu=101), cluster("b", cpu=60.4), cluster("c", cpu=13.25), cluster("min", cpu=1)],
        ["max", "b", "c", "min"],
        "AllDecisionsScheduled",
        totals={"max": 100, "b": 18, "c": -75, "min": -100},
    ),
    Case(
        "all-equal-score-the-maximum",
        "[ocm] resource: when max == min every cluster scores 100",
        {"prioritizerPolicy": {"mode": "Exact", "configurations": [MEMORY]}},
        [cluster("b"), cluster("a")],
        ["a", "b"],
        "AllDecisionsScheduled",
        totals={"a": 100, "b": 100},
    ),
    Case(
        "no-allocatable-no-score",
        "[ocm] resource: a cluster without allocatable (or capacity) of the resource is left out of the range",
        {"prioritizerPolicy": {"mode": "Exact", "configurations": [CPU]}},
        [cluster("a", cpu=8), cluster("b", cpu=2), cluster("unknown", cpu=None)],
        ["a", "unknown", "b"],
        "AllDecisionsScheduled",
        totals={"a": 100, "b": -100, "unknown": 0},
    ),
    Case(
        "weights-multiply-zero-disables-negative-reverses",
        "[api] weight in [-10, 10]: the final score is sum(weight * score); 0 disables; negative picks the last",
        {
            "numberOfClusters": 1,
            "prioritizerPolicy": {
                "mode": "Exact",
                "configurations": [
                    {"scoreCoordinate": {"builtIn": "ResourceAllocatableCPU"}, "weight": -2},
                    {"scoreCoordinate": {"builtIn": "ResourceAllocatableMemory"}, "weight": 0},
                ],
            },
        },
        [cluster("big", cpu=16, memory=1), cluster("small", cpu=4, memory=2)],
        ["small"],
        "AllDecisionsScheduled",
        scores={"small": {"ResourceAllocatableCPU": -100}},
        totals={"small": 200},
    ),
    Case(
        "ties-go-to-the-name",
        "[ocm] schedule.go: sort by score, equal scores by cluster name",
        {"numberOfClusters": 2},
        [cluster("c"), cluster("a"), cluster("b")],
        ["a", "b"],
        "AllDecisionsScheduled",
        rules={"c": "numberOfClusters"},
    ),
    Case(
        "balance-counts-other-placements",
        "[ocm] balance: 100 with no decisions elsewhere, else 2 * int64(100 * (0.5 - count / max)), own excluded",
        {"prioritizerPolicy": {"mode": "Exact", "configurations": [{"scoreCoordinate": {"builtIn": "Balance"}}]}},
        [cluster("a"), cluster("b"), cluster("c"), cluster("d")],
        ["d", "b", "c", "a"],
        "AllDecisionsScheduled",
        context=_context(
            decisions=(
                decided("ns2", "q", "a", "b"),
                decided("ns3", "r", "a"),
                decided("ns4", "s", "a"),
                decided("ns", "p", "a", "b", "c"),  # the Placement's own: not counted
                decided("ns5", "p", "c"),  # same name, other namespace: counted
            ),
            decisions_known=True,
        ),
        # a: 3 of max 3 -> -100; b, c: 1/3 -> 2 * int(16.67) = 32 (truncated before doubling, not 33); d: 100.
        totals={"a": -100, "b": 32, "c": 32, "d": 100},
    ),
    Case(
        "steady-keeps-own-decisions",
        "[ocm] steady: 100 for the clusters this Placement's decisions name, 0 for the others",
        {
            "numberOfClusters": 1,
            "prioritizerPolicy": {"mode": "Exact", "configurations": [{"scoreCoordinate": {"builtIn": "Steady"}}]},
        },
        [cluster("a"), cluster("b")],
        ["b"],
        "AllDecisionsScheduled",
        context=_context(decisions=(decided("ns", "p", "b"), decided("other", "p", "a")), decisions_known=True),
        totals={"b": 100},
    ),
    Case(
        "unknown-prioritizer-is-misconfigured",
        "[ocm] getPrioritizers: incorrect builtin prioritizer",
        {"prioritizerPolicy": {"configurations": [{"scoreCoordinate": {"builtIn": "Fastest"}}]}},
        [cluster("a")],
        [],
        "NoManagedClusterMatched",
        misconfigured="incorrect builtin prioritizer: Fastest",
    ),
    Case(
        "unknown-mode-is-misconfigured",
        "[ocm] getWeights: incorrect prioritizer policy mode",
        {"prioritizerPolicy": {"mode": "Sometimes"}},
        [cluster("a")],
        [],
        "NoManagedClusterMatched",
        misconfigured="incorrect prioritizer policy mode: Sometimes",
    ),
    # --- numberOfClusters ------------------------------------------------------------------------------------
    Case(
        "number-of-clusters-unset-selects-all",
        "[api] numberOfClusters: if not specified, all clusters meeting the requirements are selected",
        {},
        [cluster("b"), cluster("a"), cluster("c")],
        ["a", "b", "c"],
        "AllDecisionsScheduled",
    ),
    Case(
        "number-of-clusters-equal-to-feasible",
        "[api] numberOfClusters: equal to the number meeting the requirements: all selected",
        {"numberOfClusters": 2},
        [cluster("a"), cluster("b")],
        ["a", "b"],
        "AllDecisionsScheduled",
        message="All cluster decisions scheduled",
    ),
    Case(
        "number-of-clusters-above-feasible",
        "[api] numberOfClusters: fewer meet the requirements: all selected, PlacementSatisfied false",
        {"numberOfClusters": 5},
        [cluster("a"), cluster("b")],
        ["a", "b"],
        "NotAllDecisionsScheduled",
        message="3 cluster decisions unscheduled",
    ),
    # --- decision groups -------------------------------------------------------------------------------------
    Case(
        "one-group-by-name",
        "[docs] PlacementDecisions: status.decisions lists the top N clusters, ordered by names",
        {"numberOfClusters": 2, "prioritizerPolicy": {"configurations": [CPU]}},
        [cluster("zeta", cpu=16), cluster("alpha", cpu=8), cluster("mid", cpu=1)],
        ["zeta", "alpha"],
        "AllDecisionsScheduled",
        groups=[("", ["alpha", "zeta"], ["p-decision-1"])],
    ),
    Case(
        "clusters-per-decision-group",
        "[docs] decisionStrategy: clustersPerDecisionGroup a number or a percentage of the selected (rounded up)",
        {"decisionStrategy": {"groupStrategy": {"clustersPerDecisionGroup": "40%"}}},
        [cluster(name) for name in "edcba"],
        ["a", "b", "c", "d", "e"],
        "AllDecisionsScheduled",
        groups=[("", ["a", "b"], ["p-decision-1"]), ("", ["c", "d"], ["p-decision-2"]), ("", ["e"], ["p-decision-3"])],
    ),
    Case(
        "decision-groups-first-then-the-rest",
        "[docs] decisionGroups: groups by groupClusterSelector first, the other clusters divided afterwards",
        {
            "decisionStrategy": {
                "groupStrategy": {
                    "clustersPerDecisionGroup": 2,
                    "decisionGroups": [
                        {
                            "groupName": "canary",
                            "groupClusterSelector": {"labelSelector": {"matchLabels": {"canary": "yes"}}},
                        }
                    ],
                }
            }
        },
        [cluster("a"), cluster("b", labels={"canary": "yes"}), cluster("c"), cluster("d", labels={"canary": "yes"})],
        ["a", "b", "c", "d"],
        "AllDecisionsScheduled",
        groups=[("canary", ["b", "d"], ["p-decision-1"]), ("", ["a", "c"], ["p-decision-2"])],
    ),
    Case(
        "decisions-paged-at-100",
        "[docs] PlacementDecisions are paginated, the page index as the name's suffix ([ocm] 100 per page)",
        {},
        [cluster(f"c{i:03}") for i in range(150)],
        [f"c{i:03}" for i in range(150)],
        "AllDecisionsScheduled",
        groups=[("", [f"c{i:03}" for i in range(150)], ["p-decision-1", "p-decision-2"])],
    ),
    Case(
        "no-decision-is-one-empty-placement-decision",
        "[ocm] generateDecisionGroups: at least one (empty) decision group, so one empty PlacementDecision",
        {"predicates": [{"requiredClusterSelector": {"labelSelector": {"matchLabels": {"tier": "gpu"}}}}]},
        [cluster("a")],
        [],
        "NoManagedClusterMatched",
        groups=[("", [], ["p-decision-1"])],
    ),
    Case(
        "bad-percentage-is-misconfigured",
        "[ocm] calculateLength: a string that is not a percentage is Misconfigured",
        {"decisionStrategy": {"groupStrategy": {"clustersPerDecisionGroup": "half"}}},
        [cluster("a")],
        ["a"],
        "AllDecisionsScheduled",
        misconfigured="half invalid type: string is not a percentage",
        groups=[],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_ocm_rule(case: Case) -> None:
    result = evaluate(case.spec, case.bound, case.clusters, context=case.context)
    _check(case, result)
    # The quick path the cross-file checks use selects the same.
    quick = evaluate(case.spec, case.bound, case.clusters, context=case.context, explain=False)
    assert quick.selected == result.selected and quick.satisfied == result.satisfied


def _check(case: Case, result: PlacementResult) -> None:
    assert result.selected == case.selected, case.source
    assert result.satisfied is not None and result.satisfied.reason == case.reason, case.source
    assert result.satisfied.status is (case.reason == "AllDecisionsScheduled")
    if case.message is not None:
        assert result.satisfied.message == case.message
    assert result.misconfigured is not None
    assert result.misconfigured.status is (case.misconfigured is not None)
    if case.misconfigured is not None:
        assert case.misconfigured in result.misconfigured.message, result.misconfigured.message
    by_cluster = {d.cluster: d for d in result.decisions}
    for name, expected in (case.scores or {}).items():
        assert by_cluster[name].scores == expected, name
    for name, total in (case.totals or {}).items():
        assert by_cluster[name].score == total, name
    if case.groups is not None:
        assert [(g.name, list(g.clusters), list(g.placement_decisions)) for g in result.decision_groups] == case.groups
    for name, rule in (case.rules or {}).items():
        assert by_cluster[name].exclusions[0].rule == rule, (name, by_cluster[name].reasons)


# --- the three disagreements of issue 10, on the example's rendered Placement --------------------------------


@pytest.fixture(scope="module")
def example() -> Repository:
    return load_repository(ROOT)


def _job_spec(example: Repository, **changes: Any) -> dict[str, Any]:
    job = example.jobs["mnist-digits"].model_copy(update=changes)
    return placement_spec(job, example.policies.values())


def _registered(example: Repository, *, labelled: bool, capacities: dict[str, tuple[float, float]]) -> list[HubCluster]:
    """The example's clusters as a hub reports them once registered: their ClusterClaims (delivered by the
    rendered ManifestWorks), and their labels and cluster set only when ``labelled``."""
    views = []
    for declared in example.clusters.values():
        cpu, memory = capacities.get(declared.name, (declared.capacity.cpu.value, declared.capacity.memory.value))
        claims = _claims(example, declared.name)
        claims["cpu.capacity.fleet.dev"] = str(int(float(cpu) * 1000))
        claims["memory.capacity.fleet.dev"] = str(int(memory))
        labels = dict(declared.labels) if labelled else {}
        views.append(
            cluster(
                declared.name,
                declared.cluster_set if labelled else None,
                labels=labels,
                claims=claims,
                cpu=float(cpu),
                memory=float(memory),
            )
        )
    return views


def _claims(example: Repository, name: str) -> dict[str, str]:
    from fleet.claims import cluster_claims

    return cluster_claims(example.clusters[name])


GI = 2**30


def test_disagreement_1_unlabelled_clusters_leave_every_set_empty(example: Repository) -> None:
    # The rendered objects set no label on any ManagedCluster: on a hub where nobody labels clusters by hand,
    # OCM places nothing. With the labels applied (the rendered partial ManagedClusters), the three EU clusters.
    spec = _job_spec(example)
    job = example.jobs["mnist-digits"]
    context = HubContext(job.namespace, job.name, now=NOW)
    bare = evaluate(spec, job.cluster_sets, _registered(example, labelled=False, capacities={}), context=context)
    assert bare.selected == []
    assert bare.satisfied is not None and bare.satisfied.reason == "AllManagedClusterSetsEmpty"
    assert bare.satisfied.message == "All ManagedClusterSets [research-eu,research-us] have no member ManagedCluster"
    labelled = evaluate(spec, job.cluster_sets, _registered(example, labelled=True, capacities={}), context=context)
    assert labelled.selected == ["eu-central-lab", "eu-west-hospital", "eu-west-university"]
    assert labelled.satisfied is not None and labelled.satisfied.reason == "AllDecisionsScheduled"


def test_disagreement_2a_balance_moves_a_job_off_clusters_another_job_holds(example: Repository) -> None:
    # maxClients 2; the university grown to the hospital's size. First placement: lab 300, hospital and
    # university -100 each, the tie to the name: the hospital. With a second job's decisions on the lab and
    # the hospital, Balance gives them -100 and the university 100: OCM picks the university.
    spec = _job_spec(example, max_clients=2)
    job = example.jobs["mnist-digits"]
    views = _registered(example, labelled=True, capacities={"eu-west-university": (8, 32 * GI)})
    first = evaluate(spec, job.cluster_sets, views, context=HubContext(job.namespace, job.name, now=NOW))
    assert first.selected == ["eu-central-lab", "eu-west-hospital"]
    other = decided("fl-digits-two", "digits-two", "eu-central-lab", "eu-west-hospital")
    live = HubContext(job.namespace, job.name, (other,), True, now=NOW)
    result = evaluate(spec, job.cluster_sets, views, context=live)
    assert result.selected == ["eu-central-lab", "eu-west-university"]
    scores = {d.cluster: d.score for d in result.decisions}
    assert scores == {
        "eu-central-lab": 100,
        "eu-west-university": -100,
        "eu-west-hospital": -300,
        "us-east-clinic": None,
        "us-west-edge": None,
    }


def test_disagreement_2b_steady_keeps_the_earlier_choice(example: Repository) -> None:
    # maxClients 2 chose the lab and the hospital; then the university grows to 9 CPUs and 32Gi. Alone its CPU
    # now scores -75 against the hospital's -100: a first placement would swap them, which `fleet plan --diff`
    # reported. OCM's Steady gives the Placement's own earlier choices 100: it keeps the hospital.
    spec = _job_spec(example, max_clients=2)
    job = example.jobs["mnist-digits"]
    views = _registered(example, labelled=True, capacities={"eu-west-university": (9, 32 * GI)})
    first = evaluate(spec, job.cluster_sets, views, context=HubContext(job.namespace, job.name, now=NOW))
    assert first.selected == ["eu-central-lab", "eu-west-university"]
    earlier = decided(job.namespace, job.name, "eu-central-lab", "eu-west-hospital")
    live = HubContext(job.namespace, job.name, (earlier,), True, now=NOW)
    result = evaluate(spec, job.cluster_sets, views, context=live)
    assert result.selected == ["eu-central-lab", "eu-west-hospital"]
    by_cluster = {d.cluster: d for d in result.decisions}
    assert by_cluster["eu-west-hospital"].scores["Steady"] == 100
    assert by_cluster["eu-west-university"].scores["ResourceAllocatableCPU"] == -75
    assert (by_cluster["eu-west-hospital"].score, by_cluster["eu-west-university"].score) == (0, -75)


def test_disagreement_3_more_clients_than_feasible_clusters(example: Repository) -> None:
    # maxClients 4 of 3 feasible clusters: OCM selects the three and says it could not schedule the fourth.
    spec = _job_spec(example, max_clients=4)
    job = example.jobs["mnist-digits"]
    views = _registered(example, labelled=True, capacities={})
    result = evaluate(spec, job.cluster_sets, views, context=HubContext(job.namespace, job.name, now=NOW))
    assert sorted(result.selected) == ["eu-central-lab", "eu-west-hospital", "eu-west-university"]
    assert result.satisfied is not None
    assert (result.satisfied.status, result.satisfied.reason) == (False, "NotAllDecisionsScheduled")
    assert result.satisfied.message == "1 cluster decisions unscheduled"
    assert result.unscheduled == 1
