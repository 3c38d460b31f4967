"""Issue 10's "Done when": a hub holding only what ``manifests/hub`` contains plus registered clusters places the
example job on the clusters ``fleet plan`` names.

The mock hub (kmock, with server-side apply of labels: `ssa_hub`) holds the five example clusters as OCM
registers them (in OCM's ``default`` set, no other label); the test applies the committed
ManagedClusterLabels objects as Argo CD or Flux would, the running controller labels the clusters, and the
test plays the work agents (each cluster reports the ClusterClaims its committed ManifestWork delivers). The
committed Placement, ManagedClusterSets and bindings are then scheduled by the OCM scheduler model
(`fleet.placement.evaluate`, tested rule by rule in tests/fleet/test_ocm_scheduling.py) over the ManagedClusters
as the hub now holds them, and compared with ``fleet plan`` and ``fleet plan --hub``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fleet.cli import main
from fleet.placement import CLUSTER_SET_LABEL, ClusterSet, HubCluster, HubContext, evaluate
from tests.fleet.kubeconfig import write_kubeconfig

from .operator_support import Hub, Operator, RecordedRuns, eventually
from .ssa_hub import SsaApiServer
from .test_cluster_labels import CLUSTERS_API, CLUSTERS_PATH, LABELS_API, labels_hub  # noqa: F401

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaApiServer)]

ROOT = Path(__file__).resolve().parents[3]
JOB = "mnist-digits"


def _committed() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted((ROOT / "manifests" / "hub").rglob("*.yaml"))]


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _schedule(committed: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> list[str]:
    """OCM's decision for the committed Placement of the job, over the hub's ManagedClusters."""
    [placement] = [p for p in _of_kind(committed, "Placement") if p["metadata"]["name"] == JOB]
    namespace = placement["metadata"]["namespace"]
    bound = [
        b["spec"]["clusterSet"]
        for b in _of_kind(committed, "ManagedClusterSetBinding")
        if b["metadata"]["namespace"] == namespace
    ]
    sets = {s["metadata"]["name"]: ClusterSet.from_object(s) for s in _of_kind(committed, "ManagedClusterSet")}
    sets["default"] = ClusterSet("default")  # OCM's own, bound nowhere here
    hub_clusters = [HubCluster.from_object(c) for c in clusters]
    result = evaluate(placement["spec"], bound, hub_clusters, context=HubContext(namespace, JOB, cluster_sets=sets))
    return sorted(result.selected)


async def test_a_hub_holding_the_committed_manifests_places_the_job_where_fleet_plan_says(
    labels_hub: Hub,  # noqa: F811
    tmp_path: Path,
) -> None:
    hub = labels_hub
    committed = _committed()
    declarations = _of_kind(committed, "ManagedClusterLabels")
    names = sorted(d["metadata"]["name"] for d in declarations)
    assert len(names) == 5
    capacity = {
        d["metadata"]["name"]: yaml.safe_load((ROOT / "clusters" / f"{d['metadata']['name']}.yaml").read_text())[
            "capacity"
        ]
        for d in declarations
    }
    for name in names:  # registered and accepted, in OCM's default set, reporting what they can give
        await hub.create(
            CLUSTERS_API,
            None,
            {
                "apiVersion": "cluster.open-cluster-management.io/v1",
                "kind": "ManagedCluster",
                "metadata": {"name": name, "labels": {CLUSTER_SET_LABEL: "default"}},
                "spec": {"hubAcceptsClient": True},
                "status": {"allocatable": capacity[name], "capacity": capacity[name]},
            },
        )
    # The work agents: each cluster reports the ClusterClaims its committed ManifestWork delivers.
    for work in _of_kind(committed, "ManifestWork"):
        claims = [
            {"name": m["metadata"]["name"], "value": m["spec"]["value"]}
            for m in work["spec"]["workload"]["manifests"]
            if m["kind"] == "ClusterClaim"
        ]
        if claims:
            path = f"{CLUSTERS_PATH}/{work['metadata']['namespace']}/status"
            await hub.request("PATCH", path, {"status": {"clusterClaims": claims}})

    def example_clusters() -> list[dict[str, Any]]:
        return [c for c in hub.objects(CLUSTERS_API) if c["metadata"]["name"] in names]

    # Nothing labelled yet: every cluster is in OCM's default set, none in the job's; OCM places nothing.
    assert _schedule(committed, example_clusters()) == []

    async with Operator(hub, RecordedRuns()):
        for declaration in declarations:  # what Argo CD or Flux applies from manifests/hub/clusters/
            await hub.create(LABELS_API, None, declaration)

        def labelled() -> bool:
            have = {c["metadata"]["name"]: c["metadata"].get("labels") or {} for c in example_clusters()}
            return all(
                have[d["metadata"]["name"]].get(CLUSTER_SET_LABEL) == d["spec"]["clusterSet"]
                and all(have[d["metadata"]["name"]].get(k) == v for k, v in d["spec"]["labels"].items())
                for d in declarations
            )

        await eventually(labelled, what="every cluster labelled as Git declares")
    ocm = _schedule(committed, example_clusters())

    runner = CliRunner()
    offline = runner.invoke(main, ["plan", JOB, "--repo", str(ROOT), "--output", "json"])
    assert offline.exit_code == 0, offline.output
    kubeconfig = write_kubeconfig(tmp_path, hub.url)
    arguments = ["plan", JOB, "--repo", str(ROOT), "--kubeconfig", str(kubeconfig), "--output", "json"]
    live = await asyncio.to_thread(runner.invoke, main, arguments)
    assert live.exit_code == 0, live.output
    [offline_job] = json.loads(offline.stdout)["jobs"]
    [live_job] = json.loads(live.stdout)["jobs"]
    assert ocm == sorted(offline_job["selected"]) == sorted(live_job["selected"])
    assert ocm == ["eu-central-lab", "eu-west-hospital", "eu-west-university"]
