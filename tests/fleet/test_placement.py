"""The Placement evaluator's CEL: the native path for the expressions we write agrees with cel-python."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fleet.models import Cluster
from fleet.placement import _cel_predicate, _cel_program, _cel_true, _view, evaluate

CLAIM = "cpu.capacity.fleet.dev"
VALUES = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    st.from_regex(r"[+-]?[0-9]{1,4}", fullmatch=True),
    st.sampled_from(["", " 5", "5 ", "1.5", "1e3", "0x10", "1_000", "٣", "+", "-0", "9223372036854775807"]),
    st.text(max_size=6),
)


def _cluster(value: str | None, other: dict[str, str]) -> Cluster:
    cluster = Cluster.model_validate({"name": "c", "clusterSet": "s", "capacity": {"cpu": "1", "memory": "1Gi"}})
    view = _view(cluster)
    view.claims.clear()
    view.claims.update(other)
    if value is not None:
        view.claims[CLAIM] = value
    view.managed_cluster["status"]["clusterClaims"] = [{"name": k, "value": v} for k, v in view.claims.items()]
    return cluster


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(st.none(), VALUES),
    minimum=st.integers(min_value=-5, max_value=2**63 - 1),
    other=st.dictionaries(st.sampled_from(["a.fleet.dev", "b.fleet.dev"]), VALUES, max_size=2),
)
def test_native_claim_comparison_agrees_with_cel_python(value: str | None, minimum: int, other: dict[str, str]) -> None:
    # cel-python's int() is Python's (it takes " 5", "1_000", "٣", "0x10"); cel-go's, which OCM runs, parses
    # base-10 int64 only.
    # Compare only where the two CEL implementations agree; the cases below pin cel-go's behaviour.
    for text in [value, *other.values()]:
        assume(text is None or re.fullmatch(r"[+-]?[0-9]+", text) or not _python_int_parses(text))
    expression = f'managedCluster.status.clusterClaims.exists(c, c.name == "{CLAIM}" && int(c.value) >= {minimum})'
    cluster = _cluster(value, other)
    native = _cel_predicate(expression)
    assert native is not _cel_predicate(expression + " ")  # the shape really took the native path
    assert native(_view(cluster)) == _cel_true(_cel_program(expression), _view(cluster))


def _python_int_parses(text: str) -> bool:
    for base in (10, 0):  # cel-python reads "0x10" too
        try:
            int(text, base)
        except ValueError:
            continue
        return True
    return False


@pytest.mark.parametrize("value", [" 5", "5 ", "1_000", "٣", "0x10", "9223372036854775808"])
def test_values_cel_go_refuses_select_nothing(value: str) -> None:
    expression = f'managedCluster.status.clusterClaims.exists(c, c.name == "{CLAIM}" && int(c.value) >= 0)'
    assert _cel_predicate(expression)(_view(_cluster(value, {}))) is False


def test_other_expressions_go_through_cel_python() -> None:
    cluster = _cluster("4000", {})
    labels = 'managedCluster.metadata.labels["cluster.open-cluster-management.io/clusterset"] == "s"'
    assert _cel_predicate(labels)(_view(cluster)) is True
    assert _cel_predicate("1 / 0 == 1")(_view(cluster)) is False  # an error selects nothing
    assert _cel_predicate('"not a bool"')(_view(cluster)) is False


def test_capacity_filter_in_a_placement() -> None:
    small = Cluster.model_validate(
        {
            "name": "small",
            "clusterSet": "s",
            "capacity": {"cpu": "499m", "memory": "1Gi"},
            "datasets": {"d": {"path": "/d", "samples": 1}},
        }
    )
    large = Cluster.model_validate(
        {
            "name": "large",
            "clusterSet": "s",
            "capacity": {"cpu": "1", "memory": "1Gi"},
            "datasets": {"d": {"path": "/d", "samples": 1}},
        }
    )
    spec = {
        "predicates": [
            {
                "requiredClusterSelector": {
                    "celSelector": {
                        "celExpressions": [
                            f'managedCluster.status.clusterClaims.exists(c, c.name == "{CLAIM}" && int(c.value) >= 500)'
                        ]
                    }
                }
            }
        ]
    }
    result = evaluate(spec, ["s"], [small, large])
    assert result.selected == ["large"]
    (out,) = [d for d in result.decisions if d.cluster == "small"]
    assert out.exclusions[0].rule == "celSelector"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["eu-west", "eu-central", "us-east", None]),
            st.sampled_from(["research-eu", "research-us", "other"]),
            st.booleans(),
            st.integers(min_value=0, max_value=4000),
        ),
        max_size=8,
    )
)
def test_unexplained_evaluation_selects_the_same(shapes: list[tuple[str | None, str, bool, int]]) -> None:
    from pathlib import Path

    from fleet.placement import placement_spec
    from fleet.repository import load_repository

    repository = load_repository(Path(__file__).resolve().parents[2])
    job = repository.jobs["mnist-digits"]
    clusters = [
        Cluster.model_validate(
            {
                "name": f"c{i}",
                "clusterSet": cluster_set,
                "labels": {"region": region} if region else {},
                "datasets": {"digits": {"path": "/d", "samples": 1}} if holds else {},
                "capacity": {"cpu": f"{cpu}m", "memory": "2Gi"},
            }
        )
        for i, (region, cluster_set, holds, cpu) in enumerate(shapes)
    ]
    spec = placement_spec(job, repository.policies.values())
    explained = evaluate(spec, job.cluster_sets, clusters)
    quick = evaluate(spec, job.cluster_sets, clusters, explain=False)
    assert quick.selected == explained.selected
    assert quick.feasible == explained.feasible
    assert [d for d in quick.decisions] == [d for d in explained.decisions if d.selected]
