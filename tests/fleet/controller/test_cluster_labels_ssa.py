"""The server-side-apply rules the cluster labels depend on, one table row each, as the Kubernetes documentation
states them (kubernetes.io/docs/reference/using-api/server-side-apply/: "Field management", "Conflicts",
"Merge strategy"), checked against the mock hub's implementation of them (`ssa_hub`) over HTTP, with the
controller's own client (`HubClient.server_side_apply`) making the applies. The controller tests in
test_cluster_labels.py run against the same mock, so what they show holds under these rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import kubernetes
import pytest

from fleet.controller.cluster_labels import apply_configuration
from fleet.controller.hub import HubClient, TransientError
from fleet.controller.objects import MANAGED_CLUSTER
from fleet.hub_state import LABELS_FIELD_MANAGER, owned_labels

from .operator_support import Hub
from .ssa_hub import SsaApiServer

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaApiServer)]
CLUSTERS_API = "cluster.open-cluster-management.io/v1/managedclusters"
PATH = "/apis/cluster.open-cluster-management.io/v1/managedclusters"


@dataclass(frozen=True)
class Step:
    manager: str
    labels: dict[str, str | None]
    apply: bool = True
    """An apply of exactly ``labels``; else a merge patch (``kubectl label``) writing them (None removes)."""
    force: bool = False


@dataclass(frozen=True)
class Rule:
    rule: str
    """The rule, as the documentation states it."""
    steps: tuple[Step, ...]
    labels: dict[str, str]
    """The labels afterwards."""
    owners: dict[str, set[str]] = field(default_factory=dict)
    """Label -> the managers owning it afterwards (only the keys listed are checked)."""
    conflict: bool = False
    """The last step is refused with 409 and changes nothing."""


OCM = Step("registration-controller", {"cluster.open-cluster-management.io/clusterset": "default"}, apply=False)
HAND = Step("kubectl-label", {"owner": "team-a"}, apply=False)
SET = "cluster.open-cluster-management.io/clusterset"
RULES = [
    Rule(
        "an apply sets the fields it names, owned by its manager (an Apply entry in managedFields)",
        (Step(LABELS_FIELD_MANAGER, {"region": "eu-west"}),),
        {"region": "eu-west"},
        {"region": {LABELS_FIELD_MANAGER}},
    ),
    Rule(
        "fields an apply does not name are left alone, and stay their owners'",
        (HAND, Step(LABELS_FIELD_MANAGER, {"region": "eu-west"})),
        {"owner": "team-a", "region": "eu-west"},
        {"owner": {"kubectl-label"}, "region": {LABELS_FIELD_MANAGER}},
    ),
    Rule(
        "a field removed from a manager's applied configuration is removed when no other manager owns it",
        (
            Step(LABELS_FIELD_MANAGER, {"region": "eu-west", "tier": "clinical"}),
            Step(LABELS_FIELD_MANAGER, {"region": "eu-west"}),
        ),
        {"region": "eu-west"},
    ),
    Rule(
        "an empty applied configuration removes every field of that manager, and only those",
        (HAND, Step(LABELS_FIELD_MANAGER, {"region": "eu-west", "tier": "clinical"}), Step(LABELS_FIELD_MANAGER, {})),
        {"owner": "team-a"},
        {"owner": {"kubectl-label"}},
    ),
    Rule(
        "applying the value another manager set shares the field: the other keeps it when the applier lets go",
        (Step("kubectl-label", {"region": "eu-west"}, apply=False), Step(LABELS_FIELD_MANAGER, {"region": "eu-west"})),
        {"region": "eu-west"},
        {"region": {"kubectl-label", LABELS_FIELD_MANAGER}},
    ),
    Rule(
        "... and then the applier's removal leaves it to the other owner",
        (
            Step("kubectl-label", {"region": "eu-west"}, apply=False),
            Step(LABELS_FIELD_MANAGER, {"region": "eu-west"}),
            Step(LABELS_FIELD_MANAGER, {}),
        ),
        {"region": "eu-west"},
        {"region": {"kubectl-label"}},
    ),
    Rule(
        "applying another value to a field another manager owns is a conflict (409) without force",
        (OCM, Step(LABELS_FIELD_MANAGER, {SET: "research-eu"})),
        {SET: "default"},
        {SET: {"registration-controller"}},
        conflict=True,
    ),
    Rule(
        "a forced apply takes the field: the other managers lose it (how Git moves a cluster off OCM's default set)",
        (OCM, Step(LABELS_FIELD_MANAGER, {SET: "research-eu"}, force=True)),
        {SET: "research-eu"},
        {SET: {LABELS_FIELD_MANAGER}},
    ),
    Rule(
        "an update that changes a field takes it from the applier, whose later removal then leaves it",
        (
            Step(LABELS_FIELD_MANAGER, {"tier": "clinical"}),
            Step("kubectl-label", {"tier": "research"}, apply=False),
            Step(LABELS_FIELD_MANAGER, {}),
        ),
        {"tier": "research"},
        {"tier": {"kubectl-label"}},
    ),
]


def _client(hub: Hub) -> HubClient:
    configuration = kubernetes.client.Configuration()
    configuration.host = hub.url
    return HubClient(kubernetes.client.ApiClient(configuration))


def _cluster(hub: Hub, name: str) -> dict[str, Any]:
    [found] = [c for c in hub.objects(CLUSTERS_API) if c["metadata"]["name"] == name]
    return found


def _owners(obj: dict[str, Any]) -> dict[str, set[str]]:
    owners: dict[str, set[str]] = {}
    for entry in obj["metadata"].get("managedFields") or []:
        for key in entry["fieldsV1"]["f:metadata"]["f:labels"]:
            owners.setdefault(key.removeprefix("f:"), set()).add(entry["manager"])
    return owners


@pytest.mark.parametrize("rule", RULES, ids=[r.rule[:60] for r in RULES])
async def test_server_side_apply_rule(hub: Hub, rule: Rule) -> None:
    client = _client(hub)
    name = "eu-west-a"  # registered by the hub fixture, with no labels of its own but its set's
    await hub.request("PATCH", f"{PATH}/{name}", {"metadata": {"labels": {SET: None}}})
    for index, step in enumerate(rule.steps):
        last = index == len(rule.steps) - 1
        if step.apply:
            labels = {k: v for k, v in step.labels.items() if v is not None}
            config = apply_configuration(name, labels)
            if last and rule.conflict:
                before = _cluster(hub, name)
                with pytest.raises(TransientError) as refused:
                    await _in_thread(client.server_side_apply, config, step.manager, step.force)
                assert refused.value.status == 409 and "conflict" in str(refused.value)
                assert _cluster(hub, name)["metadata"].get("labels") == before["metadata"].get("labels")
                continue
            await _in_thread(client.server_side_apply, config, step.manager, step.force)
        else:
            await hub.request(
                "PATCH", f"{PATH}/{name}?fieldManager={step.manager}", {"metadata": {"labels": step.labels}}
            )
    cluster = _cluster(hub, name)
    assert (cluster["metadata"].get("labels") or {}) == rule.labels
    owners = _owners(cluster)
    for key, managers in rule.owners.items():
        assert owners.get(key) == managers, key
    assert owned_labels(cluster) == sorted(k for k, m in owners.items() if LABELS_FIELD_MANAGER in m)


async def test_an_apply_to_a_missing_object_creates_it(hub: Hub) -> None:
    # Why the controller applies only to a ManagedCluster it has seen registered: an apply would create one.
    client = _client(hub)
    await _in_thread(client.server_side_apply, apply_configuration("never-registered", {"region": "x"}), "m", False)
    assert _cluster(hub, "never-registered")["metadata"]["labels"] == {"region": "x"}


async def _in_thread(apply: Any, config: dict[str, Any], manager: str, force: bool) -> None:
    import asyncio

    await asyncio.to_thread(lambda: apply(MANAGED_CLUSTER, config, field_manager=manager, force=force))
