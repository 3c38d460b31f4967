"""``fleet plan --hub`` against a mock hub (kmock) holding PlacementDecisions and ManagedClusters: the same
outcomes as OCM's rules in tests/fleet/test_ocm_scheduling.py; and ``fleet plan --diff``'s Steady."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import yaml
from click.testing import CliRunner, Result

from fleet.cli import main
from tests.fleet.kubeconfig import write_kubeconfig

CLUSTERS_API = "cluster.open-cluster-management.io/v1/managedclusters"
DECISIONS_API = "cluster.open-cluster-management.io/v1beta1/placementdecisions"
CLUSTER_SET = "cluster.open-cluster-management.io/clusterset"


def _edit(path: Path, **changes: Any) -> None:
    document = yaml.safe_load(path.read_text())
    document.update(changes)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


class MockHub:
    def __init__(self, server: kmock.KubernetesEmulator, tmp_path: Path) -> None:
        for api, kind, namespaced in [
            (CLUSTERS_API, "ManagedCluster", False),
            (DECISIONS_API, "PlacementDecision", True),
        ]:
            server.resources[api] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, verbs={"get", "list", "create", "patch"}, subresources={"status"}
            )
        self.url = str(server.servers[0].url).rstrip("/")
        self.kubeconfig = write_kubeconfig(tmp_path, self.url)

    async def add(self, api: str, obj: dict[str, Any]) -> None:
        group_version, plural = api.rsplit("/", 1)
        namespace = obj["metadata"].get("namespace")
        path = f"/apis/{group_version}" + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
        async with aiohttp.ClientSession() as session, session.post(self.url + path, json=obj) as answer:
            assert answer.status < 400, await answer.text()

    async def cluster(
        self,
        name: str,
        cpu: str,
        memory: str,
        *,
        labels: dict[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A registered ManagedCluster; its labels are what the hub has (Git's are laid over them)."""
        await self.add(
            CLUSTERS_API,
            {
                "apiVersion": "cluster.open-cluster-management.io/v1",
                "kind": "ManagedCluster",
                "metadata": {"name": name, "labels": labels or {}, **(metadata or {})},
                "spec": {"hubAcceptsClient": True, "taints": taints or []},
                "status": {"allocatable": {"cpu": cpu, "memory": memory}, "capacity": {"cpu": cpu, "memory": memory}},
            },
        )

    async def decision(self, namespace: str, placement: str, *clusters: str) -> None:
        await self.add(
            DECISIONS_API,
            {
                "apiVersion": "cluster.open-cluster-management.io/v1beta1",
                "kind": "PlacementDecision",
                "metadata": {
                    "name": f"{placement}-decision-1",
                    "namespace": namespace,
                    "labels": {"cluster.open-cluster-management.io/placement": placement},
                },
                "status": {"decisions": [{"clusterName": c, "reason": ""} for c in clusters]},
            },
        )

    async def plan(self, repo: Path, *args: str) -> Result:
        # The mock hub answers in this test's event loop: the command runs in a thread.
        arguments = ["plan", "--repo", str(repo), "--kubeconfig", str(self.kubeconfig), "--output", "json", *args]
        return await asyncio.to_thread(CliRunner().invoke, main, arguments)


@pytest.fixture
def hub(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> MockHub:
    return MockHub(kmock, tmp_path)


async def _register_example(hub: MockHub, university: tuple[str, str] = ("4", "8Gi")) -> None:
    # Registered clusters, as a hub admin accepted them: no labels of their own (Git's come from manifests/).
    await hub.cluster("eu-central-lab", "16", "64Gi")
    await hub.cluster("eu-west-hospital", "8", "32Gi")
    await hub.cluster("eu-west-university", *university)
    await hub.cluster("us-east-clinic", "12", "48Gi")
    await hub.cluster("us-west-edge", "2", "4Gi")


def _job(result: Result, name: str = "mnist-digits") -> dict[str, Any]:
    """The plan of job ``name`` (the example's Flower job unless said) from a JSON plan of every job."""
    assert result.exit_code == 0, result.output
    [job] = [job for job in json.loads(result.stdout)["jobs"] if job["job"] == name]
    return dict(job)


@pytest.mark.asyncio
async def test_balance_from_another_jobs_decisions(hub: MockHub, example_repo: Path) -> None:
    # Issue 10, disagreement 2a (tests/fleet/test_ocm_scheduling.py): maxClients 2, the university the
    # hospital's size, a second job holding the lab and the hospital: OCM picks the university.
    _edit(example_repo / "jobs" / "mnist-digits.yaml", maxClients=2)
    _edit(example_repo / "clusters" / "eu-west-university.yaml", capacity={"cpu": "8", "memory": "32Gi"})
    await _register_example(hub, ("8", "32Gi"))
    await hub.decision("fl-digits-two", "digits-two", "eu-central-lab", "eu-west-hospital")

    offline = CliRunner().invoke(main, ["plan", "--repo", str(example_repo), "--output", "json"])
    assert _job(offline)["selected"] == ["eu-central-lab", "eu-west-hospital"]
    assert _job(offline)["scoring"]["basis"] == "first-placement"

    job = _job(await hub.plan(example_repo))
    assert job["selected"] == ["eu-central-lab", "eu-west-university"]
    assert job["scoring"]["basis"] == "hub-decisions" and "read the hub's PlacementDecisions" in job["scoring"]["note"]
    clusters = {c["cluster"]: c for c in job["clusters"]}
    assert clusters["eu-west-hospital"]["scores"]["Balance"] == -100
    assert clusters["eu-west-university"]["scores"]["Balance"] == 100
    assert (clusters["eu-central-lab"]["score"], clusters["eu-west-university"]["score"]) == (100, -100)
    assert clusters["eu-west-hospital"]["reasons"][0]["category"] == "numberOfClusters"
    assert job["liveDecisions"] == []  # this job's own Placement has decided nothing yet


@pytest.mark.asyncio
async def test_steady_keeps_the_placements_earlier_choice(hub: MockHub, example_repo: Path) -> None:
    # Disagreement 2b: the Placement chose the lab and the hospital; the university grows to 9 CPUs and 32Gi.
    _edit(example_repo / "jobs" / "mnist-digits.yaml", maxClients=2)
    _edit(example_repo / "clusters" / "eu-west-university.yaml", capacity={"cpu": "9", "memory": "32Gi"})
    await _register_example(hub, ("9", "32Gi"))
    await hub.decision("fl-mnist-digits", "mnist-digits", "eu-central-lab", "eu-west-hospital")
    job = _job(await hub.plan(example_repo))
    assert job["selected"] == ["eu-central-lab", "eu-west-hospital"]
    assert job["liveDecisions"] == ["eu-central-lab", "eu-west-hospital"]
    clusters = {c["cluster"]: c for c in job["clusters"]}
    assert clusters["eu-west-hospital"]["scores"]["Steady"] == 100
    assert clusters["eu-west-university"]["scores"] == {
        "Balance": 100,
        "Steady": 0,
        "ResourceAllocatableCPU": -75,
        "ResourceAllocatableMemory": -100,
    }
    conditions = {c["type"]: c for c in job["conditions"]}
    assert conditions["PlacementSatisfied"] == {
        "type": "PlacementSatisfied",
        "status": "True",
        "reason": "AllDecisionsScheduled",
        "message": "All cluster decisions scheduled",
    }
    assert conditions["PlacementMisconfigured"]["status"] == "False"
    assert job["decisionGroups"] == [
        {
            "decisionGroupIndex": 0,
            "decisionGroupName": "",
            "clustersCount": 2,
            "clusters": ["eu-central-lab", "eu-west-hospital"],
            "decisions": ["mnist-digits-decision-1"],
        }
    ]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_diff_reports_no_swap_that_steady_prevents(example_repo: Path) -> None:
    # The same change offline: `fleet plan` alone (a first placement) swaps the hospital for the university;
    # `fleet plan --diff` takes the base's selection as the Placement's earlier decisions, as OCM's Steady
    # keeps them, and reports no change.
    _edit(example_repo / "jobs" / "mnist-digits.yaml", maxClients=2)
    _git(example_repo, "init", "--quiet", "--initial-branch=main")
    _git(example_repo, "add", ".")
    _git(example_repo, "commit", "--quiet", "-m", "base")
    _edit(example_repo / "clusters" / "eu-west-university.yaml", capacity={"cpu": "9", "memory": "32Gi"})
    first = CliRunner().invoke(main, ["plan", "--repo", str(example_repo), "--output", "json"])
    assert _job(first)["selected"] == ["eu-central-lab", "eu-west-university"]
    diff = CliRunner().invoke(main, ["plan", "--diff", "--repo", str(example_repo), "--output", "json"])
    assert diff.exit_code == 0, diff.output
    change, openfl = json.loads(diff.stdout)["jobs"]
    assert change["job"] == "mnist-digits"
    assert change["status"] == "unchanged" and change["after"] == ["eu-central-lab", "eu-west-hospital"]
    assert openfl["job"] == "mnist-digits-openfl" and openfl["status"] == "unchanged"  # it takes all three


@pytest.mark.asyncio
async def test_registration_taints_drift_and_labels_git_left_behind(hub: MockHub, example_repo: Path) -> None:
    _edit(example_repo / "jobs" / "mnist-digits.yaml", maxClients=4)
    await hub.cluster("eu-central-lab", "16", "64Gi", labels={"region": "eu-central", "owner": "lab"})
    unavailable = {"key": "cluster.open-cluster-management.io/unavailable", "effect": "NoSelect"}
    await hub.cluster("eu-west-hospital", "8", "32Gi", taints=[unavailable])
    # eu-west-university has not registered. A cluster whose clusters/ file was removed keeps the labels an
    # earlier fleet applied as a partial ManagedCluster (Argo CD's), and some the controller applied (its
    # finalizer or sweep has not run yet: the controller is down).
    owned: dict[str, Any] = {
        f"f:{key}": {} for key in ("region", "tier", "cluster.open-cluster-management.io/clusterset")
    }
    gone = {
        "annotations": {"fleet.dev/source": "clusters/eu-north-old.yaml"},
        "managedFields": [
            {
                "manager": "argocd-controller",
                "operation": "Apply",
                "apiVersion": "cluster.open-cluster-management.io/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": owned}},
            },
            {
                "manager": "fleet-cluster-labels",
                "operation": "Apply",
                "apiVersion": "cluster.open-cluster-management.io/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:zone": {}}}},
            },
            {
                "manager": "kubectl-label",
                "operation": "Update",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:owner": {}}}},
            },
        ],
    }
    labels = {"region": "eu-west", "tier": "research", "owner": "x", "zone": "a", CLUSTER_SET: "research-eu"}
    await hub.cluster("eu-north-old", "4", "8Gi", labels=labels, metadata=gone)

    job = _job(await hub.plan(example_repo))
    clusters = {c["cluster"]: c for c in job["clusters"]}
    # Only the lab is left: the hospital is tainted unavailable and the university is not registered; the old
    # cluster still carries Git's labels, but no claims (its ManifestWork of ClusterClaims went with its file).
    assert job["selected"] == ["eu-central-lab"]
    assert [r["category"] for r in clusters["eu-west-hospital"]["reasons"]] == ["taint"]
    assert "cluster.open-cluster-management.io/unavailable" in clusters["eu-west-hospital"]["reasons"][0]["message"]
    assert [r["category"] for r in clusters["eu-west-university"]["reasons"]] == ["registration"]
    assert clusters["eu-north-old"]["declared"] is False
    assert {r["category"] for r in clusters["eu-north-old"]["reasons"]} == {"dataset", "capacity"}  # no claims
    conditions = {c["type"]: c for c in job["conditions"]}
    assert conditions["PlacementSatisfied"]["reason"] == "NotAllDecisionsScheduled"
    assert conditions["PlacementSatisfied"]["message"] == "3 cluster decisions unscheduled"
    # Where the hub differs from Git: the hospital lacks every label Git declares (no sync yet); the lab's own
    # label (owner) is not Git's and not reported.
    hospital_notes = " ".join(clusters["eu-west-hospital"]["hub"])
    assert "label region is absent on the hub, Git declares 'eu-west'" in hospital_notes
    assert "hub" not in clusters["eu-central-lab"] or all("owner" not in n for n in clusters["eu-central-lab"]["hub"])
    [note] = job["notes"]
    assert "eu-north-old: no clusters/ file declares it" in note and "controller applied (zone)" in note
    assert "the controller's sweep removes them" in note
    assert "before ManagedClusterLabels stay (cluster.open-cluster-management.io/clusterset, region, tier" in note
    assert (
        "kubectl label managedcluster eu-north-old cluster.open-cluster-management.io/clusterset- region- tier-" in note
    )  # the hand-set owner label is not Git's to remove, nor the controller's zone (its sweep removes it)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_an_unreachable_hub_exits_2(example_repo: Path, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path, f"http://127.0.0.1:{_free_port()}")
    result = CliRunner().invoke(main, ["plan", "--repo", str(example_repo), "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 2
    assert "cannot read the hub's PlacementDecisions and ManagedClusters" in result.output
    assert "Traceback" not in result.output


def test_an_unusable_kubeconfig_exits_2(example_repo: Path, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("not a kubeconfig\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["plan", "--repo", str(example_repo), "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 2
    assert "fleet plan: expected a usable kubeconfig" in result.output


def test_offline_plan_says_it_assumes_a_first_placement(example_repo: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "--repo", str(example_repo)], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Balance and Steady assume a first placement on a hub holding no PlacementDecisions" in text
    assert "PlacementSatisfied=True (AllDecisionsScheduled" in text
    assert "Balance 100" in text and "Steady 0" in text
