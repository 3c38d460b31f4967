"""Cluster labels from Git, against the mock hub with Kubernetes' server-side apply of labels (`ssa_hub`, its rules
tested in test_cluster_labels_ssa.py): the running operator labels each ManagedCluster a ManagedClusterLabels
object declares, under its own field manager, removes exactly those labels when the object is deleted (or,
found by the sweep, when nothing declares them), leaves labels others set alone, and never deletes, creates or
replaces a ManagedCluster.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import kmock
import pytest

from fleet.controller.cluster_labels import apply_configuration
from fleet.controller.objects import MANAGED_CLUSTER
from fleet.hub_state import LABELS_FIELD_MANAGER

from .operator_support import Hub, Operator, RecordedRuns, eventually
from .ssa_hub import APPLY, SsaApiServer
from .test_rbac import _controller_accesses as controller_accesses
from .test_rbac import _rendered_permissions as rendered_permissions

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaApiServer)]

LABELS_API = "federation.fleet.dev/v1alpha1/managedclusterlabels"
CLUSTERS_API = "cluster.open-cluster-management.io/v1/managedclusters"
CLUSTERS_PATH = "/apis/cluster.open-cluster-management.io/v1/managedclusters"
LABELS_PATH = "/apis/federation.fleet.dev/v1alpha1/managedclusterlabels"
SET = "cluster.open-cluster-management.io/clusterset"
CLUSTER = "eu-west-a"  # registered by the hub fixture, in set eu (its label set by the test, as OCM would)


@pytest.fixture
def labels_hub(hub: Hub) -> Hub:
    hub.server.resources[LABELS_API] = kmock.ResourceInfo(
        kind="ManagedClusterLabels",
        namespaced=False,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )
    return hub


def declaration(name: str, cluster_set: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "federation.fleet.dev/v1alpha1",
        "kind": "ManagedClusterLabels",
        "metadata": {"name": name, "generation": 1},
        "spec": {"clusterSet": cluster_set, "labels": labels},
    }


def cluster(hub: Hub, name: str = CLUSTER) -> dict[str, Any]:
    [found] = [c for c in hub.objects(CLUSTERS_API) if c["metadata"]["name"] == name]
    return found


def labels_of(hub: Hub, name: str = CLUSTER) -> dict[str, str]:
    return dict(cluster(hub, name)["metadata"].get("labels") or {})


def owners(hub: Hub, name: str = CLUSTER) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for entry in cluster(hub, name)["metadata"].get("managedFields") or []:
        for key in entry["fieldsV1"]["f:metadata"]["f:labels"]:
            found.setdefault(key.removeprefix("f:"), set()).add(entry["manager"])
    return found


def applies(hub: Hub, name: str = CLUSTER) -> list[kmock.Request]:
    """The server-side applies sent to the ManagedCluster, in order."""
    return [
        r
        for r in hub.server
        if r.method == kmock.method.PATCH
        and str(r.url.path) == f"{CLUSTERS_PATH}/{name}"
        and r.headers.get("Content-Type", "").startswith(APPLY)
    ]


def writes_that_are_not_applies(hub: Hub) -> list[str]:
    """Every request by the controller that deletes, creates, replaces or merge-patches a ManagedCluster."""
    found = []
    for r in hub.server:
        agent = r.headers.get("User-Agent", "")
        if not agent.startswith(("kopf/", "OpenAPI-Generator/")) or not str(r.url.path).startswith(CLUSTERS_PATH):
            continue
        if r.method in (kmock.method.DELETE, kmock.method.POST, kmock.method.PUT):
            found.append(f"{r.method} {r.url.path}")
        elif r.method == kmock.method.PATCH and not r.headers.get("Content-Type", "").startswith(APPLY):
            found.append(f"{r.method} {r.url.path} {r.headers.get('Content-Type')}")
    return found


async def hand_label(hub: Hub, labels: dict[str, str | None], name: str = CLUSTER) -> None:
    """``kubectl label managedcluster``: a merge patch under kubectl's field manager."""
    await hub.request("PATCH", f"{CLUSTERS_PATH}/{name}?fieldManager=kubectl-label", {"metadata": {"labels": labels}})


def applied_condition(hub: Hub, name: str = CLUSTER) -> dict[str, Any]:
    [obj] = [o for o in hub.objects(LABELS_API) if o["metadata"]["name"] == name]
    conditions = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Applied"]
    return dict(conditions[0]) if conditions else {}


async def test_declared_labels_are_applied_under_the_controllers_field_manager_and_removed_with_the_object(
    labels_hub: Hub, tmp_path: Path
) -> None:
    hub = labels_hub
    # OCM put the cluster in its default set; its owners labelled it by hand.
    await hub.request(
        "PATCH",
        f"{CLUSTERS_PATH}/{CLUSTER}?fieldManager=registration-controller",
        {"metadata": {"labels": {SET: "default"}}},
    )
    await hand_label(hub, {"owner": "team-a"})
    async with Operator(hub, RecordedRuns()):
        await hub.create(LABELS_API, None, declaration(CLUSTER, "research-eu", region="eu-west", tier="clinical"))
        want = {"owner": "team-a", SET: "research-eu", "region": "eu-west", "tier": "clinical"}
        await eventually(lambda: labels_of(hub) == want, what="Git's labels applied")
        # An apply naming exactly Git's labels, under the controller's manager, forced over OCM's default set. kopf
        # may run the create handler again before its index sees the first apply (a loaded machine): a repeat must be
        # the same apply, which server-side apply makes a no-op.
        first, *repeats = applies(hub)
        assert all((r.params, r.text) == (first.params, first.text) for r in repeats)
        assert first.params["fieldManager"] == LABELS_FIELD_MANAGER and first.params["force"] == "true"
        assert json.loads(first.text) == {
            "apiVersion": "cluster.open-cluster-management.io/v1",
            "kind": "ManagedCluster",
            "metadata": {"name": CLUSTER, "labels": {"region": "eu-west", "tier": "clinical", SET: "research-eu"}},
        }
        assert owners(hub) == {
            "owner": {"kubectl-label"},
            SET: {LABELS_FIELD_MANAGER},
            "region": {LABELS_FIELD_MANAGER},
            "tier": {LABELS_FIELD_MANAGER},
        }
        await eventually(lambda: applied_condition(hub)["status"] == "True", what="Applied=True")

        # A label dropped from the file (the object's spec) goes; the hand-set one stays.
        await hub.request(
            "PATCH", f"{LABELS_PATH}/{CLUSTER}", {"metadata": {"generation": 2}, "spec": {"labels": {"tier": None}}}
        )
        await eventually(lambda: "tier" not in labels_of(hub), what="tier removed")

        # An edit the model refuses applies nothing new; the status still names what the cluster carries from Git.
        def applied_labels() -> dict[str, str]:
            return dict(hub.objects(LABELS_API)[0].get("status", {}).get("appliedLabels", {}))

        await eventually(lambda: "tier" not in applied_labels(), what="the status after tier went")
        applied_before = len(applies(hub))
        await hub.request(
            "PATCH", f"{LABELS_PATH}/{CLUSTER}", {"metadata": {"generation": 3}, "spec": {"labels": {"bad key!": "x"}}}
        )
        await eventually(lambda: applied_condition(hub)["reason"] == "Refused", what="the bad edit refused")
        assert applied_labels() == {"region": "eu-west", SET: "research-eu"}
        assert "2 label(s) applied before are kept" in applied_condition(hub)["message"]
        assert len(applies(hub)) == applied_before and labels_of(hub)["region"] == "eu-west"
        await hub.request(
            "PATCH", f"{LABELS_PATH}/{CLUSTER}", {"metadata": {"generation": 4}, "spec": {"labels": {"bad key!": None}}}
        )
        await eventually(lambda: applied_condition(hub)["reason"] == "Applied", what="the bad key taken back")

        # The file removed: Argo CD or Flux prunes the object; its finalizer removes Git's labels, only those.
        await hub.request("DELETE", f"{LABELS_PATH}/{CLUSTER}")
        await eventually(lambda: not hub.objects(LABELS_API), what="the object gone (finalizer released)")
        last = applies(hub)[-1]
        assert last.params["fieldManager"] == LABELS_FIELD_MANAGER
        assert json.loads(last.text) == {
            "apiVersion": "cluster.open-cluster-management.io/v1",
            "kind": "ManagedCluster",
            "metadata": {"name": CLUSTER},
        }
        assert labels_of(hub) == {"owner": "team-a"}
        assert owners(hub) == {"owner": {"kubectl-label"}}
        assert cluster(hub)["spec"]["hubAcceptsClient"] is True  # the cluster itself untouched
    assert writes_that_are_not_applies(hub) == []
    # Every request of it is one the rendered RBAC allows, as Kubernetes' authorizer decides.
    permissions = rendered_permissions(tmp_path / "repo")
    accesses = [a for a in controller_accesses(hub) if "managedcluster" in a.resource]
    assert {(a.verb, a.resource) for a in accesses} >= {
        ("patch", "managedclusters"),
        ("patch", "managedclusterlabels"),
        ("patch", "managedclusterlabels/status"),
        ("watch", "managedclusterlabels"),
    }
    assert [f"{a.verb} {a.path}" for a in accesses if not permissions.allows(a)] == []


async def test_a_key_git_declares_stays_gits_and_other_labels_stay_theirs(labels_hub: Hub) -> None:
    hub = labels_hub
    async with Operator(hub, RecordedRuns()):
        await hub.create(LABELS_API, None, declaration(CLUSTER, "research-eu", region="eu-west"))
        await eventually(lambda: labels_of(hub).get("region") == "eu-west", what="applied")
        # Someone overwrites Git's region and adds a label of their own: Git's key is set back, theirs stays.
        await hand_label(hub, {"region": "us-east", "team": "ml"})
        await eventually(lambda: labels_of(hub).get("region") == "eu-west", what="region set back")
        assert labels_of(hub)["team"] == "ml" and owners(hub)["team"] == {"kubectl-label"}
        assert owners(hub)["region"] == {LABELS_FIELD_MANAGER}
    # A restarted controller resumes the object and lists the clusters: nothing to apply, nothing sent.
    before = len(applies(hub))
    async with Operator(hub, RecordedRuns()):
        # Proof the restarted controller is at work: a declaration made after its start is applied (kopf handles
        # the initial listing, eu-west-a's object among it, before later events), then a grace for stragglers.
        await hub.create(LABELS_API, None, declaration("eu-west-b", "research-eu", region="eu-west"))
        await eventually(lambda: labels_of(hub, "eu-west-b").get("region") == "eu-west", what="a new object applied")
        await asyncio.sleep(1.0)
    assert len(applies(hub)) == before
    assert writes_that_are_not_applies(hub) == []


async def test_the_sweep_removes_labels_nothing_declares_and_only_those(labels_hub: Hub) -> None:
    hub = labels_hub
    # The controller labelled eu-west-b, then its object went while the controller was away (or someone removed
    # the finalizer): its managedFields still show the controller's manager.
    await hub.request(
        "PATCH",
        f"{CLUSTERS_PATH}/eu-west-b?fieldManager=kubectl-label",
        {"metadata": {"labels": {"owner": "team-b"}}},
    )
    client = Operator(hub, RecordedRuns()).client
    config = apply_configuration("eu-west-b", {"region": "eu-west", SET: "research-eu"})
    await asyncio.to_thread(
        lambda: client.server_side_apply(MANAGED_CLUSTER, config, field_manager=LABELS_FIELD_MANAGER, force=True)
    )
    assert labels_of(hub, "eu-west-b") == {"owner": "team-b", "region": "eu-west", SET: "research-eu"}
    before = len(applies(hub, "eu-west-b"))
    async with Operator(hub, RecordedRuns()):
        await eventually(lambda: labels_of(hub, "eu-west-b") == {"owner": "team-b"}, what="the sweep")
    sweep = applies(hub, "eu-west-b")[before:]
    # The empty apply (kmock's watch may replay an older state of the cluster: a repeat is harmless).
    assert sweep and all(json.loads(r.text)["metadata"] == {"name": "eu-west-b"} for r in sweep)
    assert {r.params["fieldManager"] for r in sweep} == {LABELS_FIELD_MANAGER}
    # Clusters the controller never labelled get no request at all.
    assert applies(hub, "eu-west-a") == [] and applies(hub, "eu-central-c") == []
    assert writes_that_are_not_applies(hub) == []


async def test_a_cluster_declared_before_it_registers_is_labelled_once_it_does(labels_hub: Hub) -> None:
    hub = labels_hub
    async with Operator(hub, RecordedRuns()):
        await hub.create(LABELS_API, None, declaration("ap-south-new", "research-ap", region="ap-south"))
        await eventually(lambda: applied_condition(hub, "ap-south-new")["reason"] == "NotRegistered", what="waiting")
        assert "clusteradm accept --clusters ap-south-new" in applied_condition(hub, "ap-south-new")["message"]
        assert applies(hub, "ap-south-new") == []  # an apply would create a bare ManagedCluster: none is sent
        # A label key the API server would refuse (a CRD cannot check a map's keys): refused, nothing applied.
        await hub.create(LABELS_API, None, declaration("eu-central-c", "research-eu", **{"bad key!": "x"}))
        await eventually(lambda: applied_condition(hub, "eu-central-c").get("reason") == "Refused", what="refused")
        assert "spec.labels" in applied_condition(hub, "eu-central-c")["message"]
        assert applies(hub, "eu-central-c") == []
        assert not any(c["metadata"]["name"] == "ap-south-new" for c in hub.objects(CLUSTERS_API))
        # The klusterlet registers: OCM creates the ManagedCluster.
        await hub.create(
            CLUSTERS_API,
            None,
            {
                "apiVersion": "cluster.open-cluster-management.io/v1",
                "kind": "ManagedCluster",
                "metadata": {"name": "ap-south-new"},
                "spec": {"hubAcceptsClient": False},
            },
        )
        await eventually(lambda: labels_of(hub, "ap-south-new").get("region") == "ap-south", what="labelled")
        await eventually(lambda: applied_condition(hub, "ap-south-new")["status"] == "True", what="Applied=True")
        # Deleted while the cluster is gone again: nothing to remove, no request that would recreate it.
        await hub.request("DELETE", f"{CLUSTERS_PATH}/ap-south-new")
        await eventually(lambda: not any(c["metadata"]["name"] == "ap-south-new" for c in hub.objects(CLUSTERS_API)))
        count = len(applies(hub, "ap-south-new"))
        await hub.request("DELETE", f"{LABELS_PATH}/ap-south-new")
        await eventually(lambda: len(hub.objects(LABELS_API)) == 1, what="the object gone")
        assert len(applies(hub, "ap-south-new")) == count
        assert not any(c["metadata"]["name"] == "ap-south-new" for c in hub.objects(CLUSTERS_API))
    assert writes_that_are_not_applies(hub) == []
