"""The repository's example job, as rendered (``manifests/hub``), driven to Completed by the running operator on the
mock hub, with every object the rest of the hub contributes shaped as its real writer leaves it: ManagedClusters
whose ClusterClaims the registration agent synced from the rendered claims ManifestWork, the PlacementDecision as
OCM's placement controller writes it, the SuperLink Deployment's status as the Deployment controller writes it, and
each collaborator ManifestWork's status as the work agent computes it from its own feedback rules over the
SuperNode Deployment the spoke serves (`work_agent`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.controller.objects import PLACEMENT_LABEL, JobRef, aggregator_name, work_name

from .conftest import ROOT
from .operator_support import FL, ApiServer, Hub, Operator, RecordedRuns, eventually, register_identities
from .work_agent import collaborator_status, served_deployment

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=ApiServer)]

RENDERED = ROOT / "manifests" / "hub"
PLACED = ["eu-central-lab", "eu-west-hospital", "eu-west-university"]
"""Where `fleet plan` places the example (README, "Change a job")."""
CLUSTERS = "cluster.open-cluster-management.io/v1/managedclusters"
DECISIONS = "cluster.open-cluster-management.io/v1beta1/placementdecisions"
WORKS = "work.open-cluster-management.io/v1/manifestworks"
DEPLOYMENTS = "apps/v1/deployments"


def _rendered(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def _managed_cluster(cluster: str) -> dict[str, Any]:
    """A joined ManagedCluster as the hub serves it once the cluster's registration agent has reported the
    ClusterClaims the claims ManifestWork created (name and ``spec.value`` of each, into ``status.clusterClaims``:
    ocm pkg/registration/spoke/managedcluster/claim_reconcile.go)."""
    work = _rendered(RENDERED / "clusters" / cluster / "manifestwork-fleet-cluster-claims.yaml")
    claims = [
        {"name": m["metadata"]["name"], "value": m["spec"]["value"]}
        for m in work["spec"]["workload"]["manifests"]
        if m["kind"] == "ClusterClaim"
    ]
    at = "2026-01-01T00:00:00Z"
    conditions = [
        ("HubAcceptedManagedCluster", "HubClusterAdminAccepted", "Accepted by hub cluster admin"),
        ("ManagedClusterJoined", "ManagedClusterJoined", "Managed cluster joined"),
        ("ManagedClusterConditionAvailable", "ManagedClusterAvailable", "Managed cluster is available"),
    ]
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {
            "name": cluster,
            "labels": {"name": cluster, "cluster.open-cluster-management.io/clusterset": "default"},
            "finalizers": ["cluster.open-cluster-management.io/api-resource-cleanup"],
        },
        "spec": {"hubAcceptsClient": True, "leaseDurationSeconds": 60},
        "status": {
            "clusterClaims": claims,
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": at}
                for t, r, m in conditions
            ],
            "version": {"kubernetes": "v1.31.0"},
            "capacity": {"cpu": "16", "memory": "65851340Ki"},
            "allocatable": {"cpu": "15500m", "memory": "64000000Ki"},
        },
    }


def _placement_decision(namespace: str, placement: str) -> dict[str, Any]:
    """The first (here the only) page of a Placement's decisions, as OCM's placement controller creates it: owned
    by the Placement, labelled with it and its decision group; its status is written afterwards."""
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1beta1",
        "kind": "PlacementDecision",
        "metadata": {
            "name": f"{placement}-decision-1",
            "namespace": namespace,
            "labels": {
                PLACEMENT_LABEL: placement,
                "cluster.open-cluster-management.io/decision-group-index": "0",
                "cluster.open-cluster-management.io/decision-group-name": "",
            },
            "ownerReferences": [
                {
                    "apiVersion": "cluster.open-cluster-management.io/v1beta1",
                    "kind": "Placement",
                    "name": placement,
                    "uid": "0d6c3c36-6a3f-4a7e-8a5e-4f2b9c1d7e21",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
    }


async def test_the_example_job_as_rendered_goes_to_completed_on_a_hub_shaped_like_a_real_one(hub: Hub) -> None:
    job = _rendered(RENDERED / "jobs" / "mnist-digits" / "federatedlearning-mnist-digits.yaml")
    ref = JobRef(job["metadata"]["name"], job["metadata"]["namespace"], "")
    rounds = job["spec"]["server"]["rounds"]

    def current() -> dict[str, Any]:
        found = [o for o in hub.objects(FL) if o["metadata"]["name"] == ref.name]
        return found[0] if found else {}

    def phase() -> str:
        return str(current().get("status", {}).get("phase", ""))

    runs = RecordedRuns()
    for cluster in PLACED:
        await hub.create(CLUSTERS, None, _managed_cluster(cluster))
    async with Operator(hub, runs):
        await register_identities(hub, PLACED)
        await hub.create(FL, ref.namespace, job)
        await eventually(lambda: hub.objects(DEPLOYMENTS), what="the SuperLink Deployment")
        decision = _placement_decision(ref.namespace, ref.name)
        await hub.create(DECISIONS, ref.namespace, decision)
        status = {"decisions": [{"clusterName": c, "reason": ""} for c in PLACED]}
        await hub.patch_status(DECISIONS, ref.namespace, decision["metadata"]["name"], status)
        await eventually(lambda: len(hub.objects(WORKS)) == len(PLACED), what="a ManifestWork per placed cluster")

        superlink = next(d for d in hub.objects(DEPLOYMENTS) if d["metadata"]["name"] == aggregator_name(ref))
        served = served_deployment(superlink, available=1)["status"]
        await hub.patch_status(DEPLOYMENTS, ref.namespace, aggregator_name(ref), served)
        for work in hub.objects(WORKS):
            cluster = work["metadata"]["namespace"]
            await hub.patch_status(WORKS, cluster, work_name(ref), collaborator_status(work, 1))
        await eventually(lambda: phase() == "Running", what="Running")
        assert runs.submitted == [(ref.namespace, ref.name, rounds)]

        progress = hub.models / job["spec"]["server"]["storage"]["path"].lstrip("/") / "progress.jsonl"
        progress.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            {"event": "round", "round": n, "participants": PLACED, "metrics": {"accuracy": 0.8}, "time": None}
            for n in range(1, rounds + 1)
        ]
        lines.append({"event": "completed", "metrics": {"accuracy": 0.91}})
        progress.write_text("".join(json.dumps(line) + "\n" for line in lines))
        await eventually(lambda: phase() == "Completed", what="Completed")
        await eventually(lambda: not hub.objects(WORKS), what="the spokes freed")

    final = current()["status"]
    assert final["currentRound"] == rounds and final["finalMetrics"] == {"accuracy": 0.91}
    assert final["modelPath"] == f"{job['spec']['server']['storage']['path']}/model.pt"
    minimum = job["spec"]["server"]["minAvailableClients"]
    assert set(final["participatingClusters"]) <= set(PLACED) and len(final["participatingClusters"]) >= minimum
    assert {c for c, _ in runs.registered} == set(PLACED)
    (superlink,) = [d for d in hub.objects(DEPLOYMENTS) if d["metadata"]["name"] == aggregator_name(ref)]
    assert superlink["spec"]["replicas"] == 0
