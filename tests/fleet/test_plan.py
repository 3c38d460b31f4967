"""fleet.plan on the example and on hand-made repositories: each exclusion reason, each Placement rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.models import Cluster
from fleet.placement import evaluate
from fleet.plan import JobPlan, PlanError, compare, plan
from fleet.repository import load_repository

EXAMPLE_SELECTED = {"eu-central-lab", "eu-west-hospital", "eu-west-university"}


def _write(repo: Path, folder: str, name: str, document: dict[str, Any]) -> None:
    (repo / folder).mkdir(parents=True, exist_ok=True)
    (repo / folder / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def _job(**overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "name": "train",
        "namespace": "fl-train",
        "images": {"server": "example.org/app:1", "client": "example.org/app:1"},
        "rounds": 2,
        "minAvailableClients": 1,
        "maxClients": 5,
        "dataset": "scans",
        "storage": {"pvc": {"name": "model", "size": "1Gi", "path": "/models"}},
        "listeners": [{"name": "server", "type": "NodePort", "port": 30090}],
        "clusterSets": ["lab"],
    }
    job.update(overrides)
    return job


def _cluster(name: str, **overrides: Any) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "clusterSet": "lab",
        "labels": {"region": "eu"},
        "datasets": {"scans": {"path": f"/data/{name}", "samples": 10}},
        "capacity": {"cpu": "4", "memory": "8Gi"},
    }
    cluster.update(overrides)
    return cluster


def _by_cluster(job_plan: JobPlan) -> dict[str, Any]:
    return {c.cluster: c for c in job_plan.clusters}


def test_example(example_repo: Path) -> None:
    job_plan, openfl_plan = plan(load_repository(example_repo))
    assert (job_plan.job, openfl_plan.job) == ("mnist-digits", "mnist-digits-openfl")
    clusters = _by_cluster(job_plan)

    assert set(job_plan.selected) == EXAMPLE_SELECTED
    assert job_plan.min_available_clients == 2 and job_plan.min_available_met
    assert job_plan.placement == "jobs/mnist-digits/placement-mnist-digits.yaml"
    assert job_plan.policies == ("digits-residency",)
    assert set(clusters) == EXAMPLE_SELECTED | {"us-east-clinic", "us-west-edge"}
    # Largest capacity first: OCM's scores, integers in [-100, 100] per prioritizer: the two the Placement
    # configures, and Additive mode's Balance (100: no other Placement's decisions) and Steady (0: none of its own).
    assert job_plan.selected[0] == "eu-central-lab" and clusters["eu-central-lab"].score == 300
    assert clusters["eu-central-lab"].scores == {
        "Balance": 100,
        "Steady": 0,
        "ResourceAllocatableCPU": 100,
        "ResourceAllocatableMemory": 100,
    }
    assert job_plan.basis == "first-placement"
    assert job_plan.satisfied is not None and job_plan.satisfied.reason == "AllDecisionsScheduled"
    clinic = clusters["us-east-clinic"]
    assert [(r.category, r.policy) for r in clinic.reasons] == [("policy", "digits-residency")]
    assert "us-east" in clinic.reasons[0].message
    edge_categories = {r.category for r in clusters["us-west-edge"].reasons}
    assert "dataset" in edge_categories
    assert job_plan.notes == ()
    # The same job on OpenFL places the same, from its own Placement; the plan says what the hub runs for it.
    assert openfl_plan.selected == job_plan.selected
    assert openfl_plan.placement == "jobs/mnist-digits-openfl/placement-mnist-digits-openfl.yaml"
    assert _by_cluster(openfl_plan)["eu-central-lab"].scores == clusters["eu-central-lab"].scores
    [note] = openfl_plan.notes
    assert "framework: openfl" in note and "mnist-digits-openfl-aggregator" in note and "28x28" in note


def test_dataset_not_held(tmp_path: Path) -> None:
    _write(tmp_path, "jobs", "train", _job())
    _write(tmp_path, "clusters", "a", _cluster("a"))
    _write(tmp_path, "clusters", "b", _cluster("b", datasets={}))
    clusters = _by_cluster(plan(load_repository(tmp_path))[0])
    assert clusters["a"].selected
    assert [r.category for r in clusters["b"].reasons] == ["dataset"]
    assert "'scans'" in clusters["b"].reasons[0].message


def test_policy_label_selector_names_the_policy(tmp_path: Path) -> None:
    _write(tmp_path, "jobs", "train", _job())
    _write(tmp_path, "clusters", "a", _cluster("a"))
    _write(tmp_path, "clusters", "b", _cluster("b", labels={"region": "us", "tier": "edge"}))
    for name, selector in {
        "residency": {"matchLabels": {"region": "eu"}},
        "no-edge": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["edge"]}]},
    }.items():
        _write(tmp_path, "policies", name, {"name": name, "datasets": ["scans"], "allowedClusters": selector})
    job_plan = plan(load_repository(tmp_path))[0]
    assert job_plan.policies == ("no-edge", "residency")
    b = _by_cluster(job_plan)["b"]
    assert {(r.category, r.policy) for r in b.reasons} == {("policy", "residency"), ("policy", "no-edge")}


def test_cluster_set_not_in_the_job(tmp_path: Path) -> None:
    _write(tmp_path, "jobs", "train", _job())
    _write(tmp_path, "clusters", "a", _cluster("a"))
    _write(tmp_path, "clusters", "b", _cluster("b", clusterSet="other"))
    b = _by_cluster(plan(load_repository(tmp_path))[0])["b"]
    assert [(r.category, r.rule) for r in b.reasons] == [("clusterSet", "clusterSets")]


def test_cluster_set_not_bound_reads_the_rendered_bindings(tmp_path: Path) -> None:
    import render

    _write(tmp_path, "jobs", "train", _job(clusterSets=["lab", "field"]))
    _write(tmp_path, "clusters", "a", _cluster("a"))
    _write(tmp_path, "clusters", "b", _cluster("b", clusterSet="field"))
    repository = load_repository(tmp_path)
    rendered = [
        (m.path, m.body)
        for m in render.synth(repository, "hub")
        if not (m.body["kind"] == "ManagedClusterSetBinding" and m.body["spec"]["clusterSet"] == "field")
    ]
    job_plan = plan(repository, rendered=rendered)[0]
    assert job_plan.bound_cluster_sets == ("lab",)
    b = _by_cluster(job_plan)["b"]
    assert [(r.category, r.rule) for r in b.reasons] == [("clusterSet", "clusterSetBinding")]
    assert "fl-train" in b.reasons[0].message


def test_capacity_below_the_request(tmp_path: Path) -> None:
    _write(tmp_path, "jobs", "train", _job(resources={"cpu": "6", "memory": "1Gi", "gpu": 1}))
    _write(tmp_path, "clusters", "a", _cluster("a", capacity={"cpu": "8", "memory": "8Gi", "gpu": 1}))
    _write(tmp_path, "clusters", "b", _cluster("b", capacity={"cpu": "4", "memory": "8Gi"}))
    b = _by_cluster(plan(load_repository(tmp_path))[0])["b"]
    assert [r.category for r in b.reasons] == ["capacity", "capacity"]
    messages = " ".join(r.message for r in b.reasons)
    assert "cpu 6 requested, cluster has 4" in messages and "gpu 1 requested, cluster has 0" in messages


def test_cut_by_number_of_clusters_after_scoring(tmp_path: Path) -> None:
    _write(tmp_path, "jobs", "train", _job(maxClients=2))
    _write(tmp_path, "clusters", "big", _cluster("big", capacity={"cpu": "16", "memory": "64Gi"}))
    _write(tmp_path, "clusters", "mid", _cluster("mid", capacity={"cpu": "8", "memory": "32Gi"}))
    _write(tmp_path, "clusters", "small", _cluster("small", capacity={"cpu": "2", "memory": "4Gi"}))
    job_plan = plan(load_repository(tmp_path))[0]
    assert job_plan.selected == ["big", "mid"]
    small = _by_cluster(job_plan)["small"]
    assert [r.category for r in small.reasons] == ["numberOfClusters"]
    # CPU -100 and memory -100, plus Balance's 100 for a first placement.
    assert small.score == -100 and "numberOfClusters=2" in small.reasons[0].message


def test_unknown_job(example_repo: Path) -> None:
    with pytest.raises(PlanError, match=r"no job named 'nope'.*mnist-digits"):
        plan(load_repository(example_repo), ["nope"])


def test_compare_gains_and_losses(tmp_path: Path) -> None:
    _write(tmp_path, "jobs", "train", _job())
    _write(tmp_path, "clusters", "a", _cluster("a"))
    _write(tmp_path, "clusters", "b", _cluster("b"))
    before = plan(load_repository(tmp_path))
    (tmp_path / "clusters" / "b.yaml").unlink()
    _write(tmp_path, "clusters", "c", _cluster("c"))
    listeners = [{"name": "server", "type": "NodePort", "port": 30091}]  # a NodePort of its own
    _write(tmp_path, "jobs", "other", _job(name="other", namespace="fl-other", listeners=listeners))
    after = plan(load_repository(tmp_path))
    changes = {c.job: c for c in compare(before, after)}
    assert changes["train"].status == "changed"
    assert changes["train"].gained == ["c"] and changes["train"].lost == ["b"]
    assert changes["other"].status == "added" and changes["other"].gained == ["a", "c"]
    assert [c.status for c in compare(after, after)] == ["unchanged", "unchanged"]
    assert compare(after, [])[0].status == "removed"


# --- the Placement rules, on the evaluator itself ---------------------------------------------------------


def _clusters(*specs: tuple[str, str, dict[str, str], str]) -> list[Cluster]:
    return [
        Cluster.model_validate(
            {
                "name": name,
                "clusterSet": cluster_set,
                "labels": labels,
                "capacity": {"cpu": cpu, "memory": "8Gi"},
            }
        )
        for name, cluster_set, labels, cpu in specs
    ]


def test_predicates_or_across_and_within() -> None:
    clusters = _clusters(
        ("both", "s", {"a": "1", "b": "1"}, "1"),
        ("only-a", "s", {"a": "1"}, "1"),
        ("only-c", "s", {"c": "1"}, "1"),
        ("none", "s", {}, "1"),
    )
    spec = {
        "predicates": [
            {"requiredClusterSelector": {"labelSelector": {"matchLabels": {"a": "1", "b": "1"}}}},
            {"requiredClusterSelector": {"labelSelector": {"matchExpressions": [{"key": "c", "operator": "Exists"}]}}},
        ]
    }
    result = evaluate(spec, ["s"], clusters)
    assert sorted(result.selected) == ["both", "only-c"]
    out = {d.cluster: d for d in result.decisions if not d.selected}
    # Inside one predicate the terms are ANDed: only-a fails the first on b, and the second on c.
    assert [e.key for e in out["only-a"].exclusions] == ["b"]


def test_empty_cluster_sets_means_every_bound_set() -> None:
    clusters = _clusters(("x", "one", {}, "1"), ("y", "two", {}, "1"), ("z", "three", {}, "1"))
    result = evaluate({}, ["one", "two"], clusters)
    assert sorted(result.selected) == ["x", "y"]
    [z] = [d for d in result.decisions if d.cluster == "z"]
    assert z.exclusions[0].rule == "clusterSetBinding"  # no clusterSets listed: its set is simply not bound


def test_listed_but_unbound_set_is_out() -> None:
    clusters = _clusters(("x", "one", {}, "1"), ("y", "two", {}, "1"))
    result = evaluate({"clusterSets": ["one", "two"]}, ["one"], clusters)
    assert result.selected == ["x"]
    assert [e.rule for d in result.decisions if d.cluster == "y" for e in d.exclusions] == ["clusterSetBinding"]


def test_scores_are_truncated_integers_and_ties_go_by_name() -> None:
    # CPU 1 .. 101 cores: "a" (60.1) and "b" (60.4) score 18.2 and 18.8 as floats, both 18 as OCM's int64;
    # Balance adds 100 to each (a first placement), Steady 0.
    clusters = _clusters(
        ("b", "s", {}, "60400m"), ("a", "s", {}, "60100m"), ("high", "s", {}, "101"), ("low", "s", {}, "1")
    )
    spec = {
        "numberOfClusters": 2,
        "prioritizerPolicy": {
            "mode": "Additive",
            "configurations": [{"scoreCoordinate": {"type": "BuiltIn", "builtIn": "ResourceAllocatableCPU"}}],
        },
    }
    result = evaluate(spec, ["s"], clusters)
    scores = {d.cluster: d.score for d in result.decisions}
    assert scores == {"high": 200, "a": 118, "b": 118, "low": 0}
    assert result.selected == ["high", "a"]
    assert result.feasible == ("high", "a", "b", "low")


def test_all_equal_capacity_scores_the_maximum() -> None:
    clusters = _clusters(("b", "s", {}, "2"), ("a", "s", {}, "2"))
    spec = {
        "prioritizerPolicy": {
            "configurations": [
                {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "ResourceAllocatableMemory"}, "weight": 2}
            ]
        }
    }
    result = evaluate(spec, ["s"], clusters)
    assert [(d.cluster, d.score) for d in result.decisions] == [("a", 300), ("b", 300)]  # 2 x 100, Balance 100


def test_the_plan_says_what_the_hub_runs_for_an_openfl_job(tmp_path: Path) -> None:
    # OpenFL's aggregator on the hub reads its plan once and builds its initial model for 28x28 images: a plan
    # that listed only the placement would leave out what decides whether the run can work.
    _write(tmp_path, "jobs", "train", _job(framework="openfl"))
    _write(tmp_path, "clusters", "a", _cluster("a"))
    [job_plan] = plan(load_repository(tmp_path))
    assert _by_cluster(job_plan)["a"].selected
    [note] = job_plan.notes
    assert "framework: openfl" in note and "train-aggregator" in note and "28x28" in note
    _write(tmp_path, "jobs", "train", _job())
    assert plan(load_repository(tmp_path))[0].notes == ()
