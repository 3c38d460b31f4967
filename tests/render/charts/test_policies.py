"""The policies/ folders: data-locality rules as OCM governance policies, placed on the right clusters."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import Rendered, assert_valid, in_folder, one
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import InvalidRepository
from fleet.hub import ADDON_INSTALL_NAMESPACE, POLICY_NAMESPACE
from fleet.models import Cluster, DataLocalityPolicy, LabelSelector
from fleet.placement import evaluate
from fleet.repository import Repository
from render.charts.policies import (
    DATASET_LABEL,
    egress_placement_spec,
    locality_placement_spec,
    negated_terms,
)

Example = tuple[Repository, Rendered]
RenderRepo = Callable[[Path], tuple[Repository, Rendered]]
POLICY = "digits-residency"


def _selected(repository: Repository, placement: dict[str, Any]) -> list[str]:
    """Evaluate a rendered Placement as OCM would over the repository's clusters, bound as the chart binds."""
    bound = {c.cluster_set for c in repository.clusters.values()}
    return sorted(evaluate(placement["spec"], bound, list(repository.clusters.values())).selected)


def _edit_policy(root: Path, **changes: Any) -> None:
    path = root / "policies" / f"{POLICY}.yaml"
    document = yaml.safe_load(path.read_text())
    document.update(changes)
    path.write_text(yaml.safe_dump(document))


def test_policy_namespace_is_bound_to_every_cluster_set(example: Example) -> None:
    repository, rendered = example
    objects = in_folder(rendered, "policies")
    assert one(objects, "Namespace")["metadata"]["name"] == POLICY_NAMESPACE
    bindings = [b for b in objects.values() if b["kind"] == "ManagedClusterSetBinding"]
    assert sorted(b["spec"]["clusterSet"] for b in bindings) == ["research-eu", "research-us"]
    assert sorted({c.cluster_set for c in repository.clusters.values()}) == ["research-eu", "research-us"]
    assert all(b["metadata"]["namespace"] == POLICY_NAMESPACE for b in bindings)


def test_each_policy_has_its_folder_with_policies_placements_and_bindings(example: Example) -> None:
    _, rendered = example
    objects = in_folder(rendered, f"policies/{POLICY}")
    assert sorted(objects) == [
        f"policies/{POLICY}/placement-{POLICY}-egress.yaml",
        f"policies/{POLICY}/placement-{POLICY}-locality.yaml",
        f"policies/{POLICY}/placementbinding-{POLICY}-egress.yaml",
        f"policies/{POLICY}/placementbinding-{POLICY}-locality.yaml",
        f"policies/{POLICY}/policy-{POLICY}-egress.yaml",
        f"policies/{POLICY}/policy-{POLICY}-locality.yaml",
    ]
    for body in objects.values():
        assert body["metadata"]["namespace"] == POLICY_NAMESPACE
        assert body["metadata"]["annotations"]["fleet.dev/source"] == f"policies/{POLICY}.yaml"
    for binding in (b for b in objects.values() if b["kind"] == "PlacementBinding"):
        name = binding["metadata"]["name"]
        assert binding["placementRef"]["name"] == one(objects, "Placement", name)["metadata"]["name"]
        assert [s["name"] for s in binding["subjects"]] == [one(objects, "Policy", name)["metadata"]["name"]]
    for policy in (b for b in objects.values() if b["kind"] == "Policy"):
        assert policy["spec"]["remediationAction"] == "enforce"
        assert policy["spec"]["disabled"] is False


def test_egress_policy_is_placed_on_the_allowed_clusters_holding_the_data(example: Example) -> None:
    repository, rendered = example
    placement = one(rendered, "Placement", f"{POLICY}-egress")
    policy = repository.policies[POLICY]
    expected = sorted(
        c.name
        for c in repository.clusters.values()
        if set(c.datasets) & set(policy.datasets) and policy.allowed_clusters.matches(c.labels)
    )
    assert _selected(repository, placement) == expected == ["eu-central-lab", "eu-west-hospital", "eu-west-university"]


def test_locality_policy_is_placed_on_the_clusters_holding_the_data_but_not_allowed(example: Example) -> None:
    repository, rendered = example
    placement = one(rendered, "Placement", f"{POLICY}-locality")
    # us-east-clinic holds digits outside the allowed regions; us-west-edge holds nothing.
    assert _selected(repository, placement) == ["us-east-clinic"]


def test_egress_network_policy_allows_dns_and_the_aggregator_only(example: Example) -> None:
    repository, rendered = example
    (template,) = one(rendered, "Policy", f"{POLICY}-egress")["spec"]["policy-templates"]
    configuration = template["objectDefinition"]
    assert configuration["kind"] == "ConfigurationPolicy"
    assert configuration["spec"]["remediationAction"] == "enforce"
    (object_template,) = configuration["spec"]["object-templates"]
    assert object_template["complianceType"] == "musthave"
    network_policy = object_template["objectDefinition"]
    assert network_policy["metadata"]["namespace"] == ADDON_INSTALL_NAMESPACE
    spec = network_policy["spec"]
    assert spec["podSelector"] == {} and spec["policyTypes"] == ["Egress"]
    dns, aggregator = spec["egress"]
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    # No aggregatorCidrs in the example: any address, but only on the governed jobs' listener ports (the Flower
    # job's and the OpenFL job's).
    ports = sorted({listener.port for job in repository.jobs.values() for listener in job.listeners})
    assert aggregator == {"ports": [{"protocol": "TCP", "port": port} for port in ports]} and ports == [30093, 30094]


def test_egress_to_the_aggregator_cidrs_when_given(example_repo: Path, render_repo: RenderRepo) -> None:
    _edit_policy(example_repo, aggregatorCidrs=["203.0.113.0/24", "2001:db8::/64"])
    _, rendered = render_repo(example_repo)
    (template,) = one(rendered, "Policy", f"{POLICY}-egress")["spec"]["policy-templates"]
    egress = template["objectDefinition"]["spec"]["object-templates"][0]["objectDefinition"]["spec"]["egress"]
    assert egress[1] == {
        "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/64"}}],
        "ports": [{"protocol": "TCP", "port": 30093}, {"protocol": "TCP", "port": 30094}],
    }


def test_route_listeners_are_reached_on_the_routers_tls_port(example_repo: Path, render_repo: RenderRepo) -> None:
    path = example_repo / "jobs" / "mnist-digits.yaml"
    job = yaml.safe_load(path.read_text())
    job["listeners"] = [{"name": "server", "type": "Route", "port": 9092, "host": "fl.example.org"}]
    path.write_text(yaml.safe_dump(job))
    _, rendered = render_repo(example_repo)
    (template,) = one(rendered, "Policy", f"{POLICY}-egress")["spec"]["policy-templates"]
    egress = template["objectDefinition"]["spec"]["object-templates"][0]["objectDefinition"]["spec"]["egress"]
    # The Flower job's Route is reached on 443 (not 9092); the OpenFL job keeps its NodePort.
    assert egress[1] == {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 30094}]}


def test_no_egress_policy_without_the_rule(example_repo: Path, render_repo: RenderRepo) -> None:
    _edit_policy(example_repo, rules={"requireTls": True, "minClientsPerRound": 2, "egressOnlyToAggregator": False})
    _, rendered = render_repo(example_repo)
    kinds = sorted((b["kind"], b["metadata"]["name"]) for b in in_folder(rendered, f"policies/{POLICY}").values())
    assert kinds == [
        ("Placement", f"{POLICY}-locality"),
        ("PlacementBinding", f"{POLICY}-locality"),
        ("Policy", f"{POLICY}-locality"),
    ]


def test_locality_policy_forbids_collaborator_workloads_for_the_governed_dataset(example: Example) -> None:
    _, rendered = example
    (template,) = one(rendered, "Policy", f"{POLICY}-locality")["spec"]["policy-templates"]
    configuration = template["objectDefinition"]["spec"]
    assert configuration["remediationAction"] == "enforce"
    kinds = set()
    for object_template in configuration["object-templates"]:
        assert object_template["complianceType"] == "mustnothave"
        workload = object_template["objectDefinition"]
        assert "name" not in workload["metadata"]  # unnamed: every object of the kind with these labels
        assert workload["metadata"] == {
            "namespace": ADDON_INSTALL_NAMESPACE,
            "labels": {DATASET_LABEL: "digits"},
        }
        kinds.add(workload["kind"])
    assert kinds == {"Deployment", "StatefulSet", "Job", "Pod"}


def test_an_allow_all_policy_has_no_locality_policy(example_repo: Path, render_repo: RenderRepo) -> None:
    _edit_policy(example_repo, allowedClusters={})
    repository, rendered = render_repo(example_repo)
    names = {b["metadata"]["name"] for b in in_folder(rendered, f"policies/{POLICY}").values()}
    assert names == {f"{POLICY}-egress"}
    # ... and its egress policy then covers every cluster holding the data.
    placement = one(rendered, "Placement", f"{POLICY}-egress")
    assert _selected(repository, placement) == sorted(c.name for c in repository.clusters.values() if c.datasets)


def test_a_name_too_long_for_ocm_is_refused_naming_the_file(example_repo: Path, render_repo: RenderRepo) -> None:
    path = example_repo / "policies" / f"{POLICY}.yaml"
    text = path.read_text()
    # fleet-policies.<name>-locality fits OCM's 63 characters with 39, not with 40.
    path.write_text(text.replace(f"name: {POLICY}", f"name: {'a' * 39}"))
    _, rendered = render_repo(example_repo)
    assert f"policies/{'a' * 39}/policy-{'a' * 39}-locality.yaml" in rendered
    path.write_text(text.replace(f"name: {POLICY}", f"name: {'a' * 40}"))
    # a problem of the repository, reported with file, line and field before anything is rendered
    with pytest.raises(InvalidRepository, match=rf"policies/{POLICY}\.yaml:\d+: name: expected at most 39 characters"):
        render_repo(example_repo)


def test_policy_objects_and_what_they_put_on_the_spokes_are_valid(example: Example, crds_dir: Path) -> None:
    _, rendered = example
    objects = {p: b for p, b in rendered.items() if p.startswith("policies/")}
    embedded: list[tuple[str, dict[str, Any]]] = []
    for path, body in objects.items():
        if body["kind"] != "Policy":
            continue
        for index, template in enumerate(body["spec"]["policy-templates"]):
            configuration = template["objectDefinition"]
            # As the policy framework creates it on a spoke: in the cluster's namespace there.
            placed = {
                **configuration,
                "metadata": {**configuration["metadata"], "namespace": "eu-west-hospital"},
            }
            embedded.append((f"{path}#{index}", placed))
            for object_index, object_template in enumerate(configuration["spec"]["object-templates"]):
                if object_template["complianceType"] == "musthave":
                    embedded.append((f"{path}#{index}.{object_index}", object_template["objectDefinition"]))
    assert len(embedded) == 3  # two ConfigurationPolicies, one NetworkPolicy
    assert_valid([*objects.items(), *embedded], crds_dir)


# --- negating an allowed-clusters selector -----------------------------------------------------------------


def _cluster(name: str, labels: dict[str, str]) -> Cluster:
    return Cluster.model_validate(
        {
            "name": name,
            "clusterSet": "set",
            "labels": labels,
            "datasets": {"digits": {"path": "/data/digits", "samples": 1}},
            "capacity": {"cpu": "1", "memory": "1Gi"},
        }
    )


def _policy(selector: dict[str, Any]) -> DataLocalityPolicy:
    return DataLocalityPolicy.model_validate({"name": "p", "datasets": ["digits"], "allowedClusters": selector})


_KEYS = ("region", "tier")
_VALUES = ("a", "b", "c")
_requirement = st.one_of(
    st.builds(
        lambda key, operator, values: {"key": key, "operator": operator, "values": sorted(values)},
        st.sampled_from(_KEYS),
        st.sampled_from(["In", "NotIn"]),
        st.sets(st.sampled_from(_VALUES), min_size=1),
    ),
    st.builds(
        lambda key, operator: {"key": key, "operator": operator},
        st.sampled_from(_KEYS),
        st.sampled_from(["Exists", "DoesNotExist"]),
    ),
)
_selector = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(_VALUES), max_size=2),
        "matchExpressions": st.lists(_requirement, max_size=3),
    },
)
_labels = st.lists(st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(_VALUES), max_size=2), max_size=8)


@settings(max_examples=150, deadline=None)
@given(selector=_selector, label_sets=_labels)
def test_placements_split_the_data_holders_exactly_by_the_selector(
    selector: dict[str, Any], label_sets: list[dict[str, str]]
) -> None:
    policy = _policy(selector)
    clusters = [_cluster(f"c{i}", labels) for i, labels in enumerate(label_sets)]
    allowed = sorted(c.name for c in clusters if policy.allowed_clusters.matches(c.labels))
    disallowed = sorted(c.name for c in clusters if c.name not in allowed)
    assert sorted(evaluate(egress_placement_spec(policy), {"set"}, clusters).selected) == allowed
    locality = locality_placement_spec(policy)
    if locality is None:  # only a selector that allows everything has no negation
        assert disallowed == [] and negated_terms(policy.allowed_clusters) == []
    else:
        assert sorted(evaluate(locality, {"set"}, clusters).selected) == disallowed


def test_negation_of_each_operator() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"tier": "research"},
            "matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu-west"]},
                {"key": "zone", "operator": "NotIn", "values": ["z1"]},
                {"key": "gpu", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert json.loads(json.dumps(negated_terms(selector))) == [
        {"key": "tier", "operator": "NotIn", "values": ["research"]},
        {"key": "region", "operator": "NotIn", "values": ["eu-west"]},
        {"key": "zone", "operator": "In", "values": ["z1"]},
        {"key": "gpu", "operator": "DoesNotExist"},
        {"key": "legacy", "operator": "Exists"},
    ]


def test_locality_placement_requires_the_dataset_claim(example: Example) -> None:
    repository, rendered = example
    for predicate in one(rendered, "Placement", f"{POLICY}-locality")["spec"]["predicates"]:
        claims = predicate["requiredClusterSelector"]["claimSelector"]["matchExpressions"]
        assert claims == [{"key": "digits.dataset.fleet.dev", "operator": "Exists"}]
    assert "us-west-edge" in repository.clusters  # labelled outside the allowed regions, but holds no data
