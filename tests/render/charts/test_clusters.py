"""clusters/<cluster>/managedcluster-<cluster>.yaml: what clusters/ declares about a cluster's labels and cluster
set, made true on the hub's own ManagedCluster, owning those fields only; no GitOps tool may delete it.

A hub holding only what the hub target renders, plus registered clusters, then places the example job where
`fleet plan` says (the OCM rules of the evaluator are tested in tests/fleet/test_ocm_scheduling.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import Rendered, assert_valid

from fleet.placement import CLUSTER_SET_LABEL, ClusterSet, HubCluster, HubContext, evaluate
from fleet.plan import plan
from fleet.repository import Repository

GITOPS_MANAGERS = {"argocd-controller", "kustomize-controller"}


def _managed_clusters(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {path: body for path, body in rendered.items() if body["kind"] == "ManagedCluster"}


def test_one_partial_managed_cluster_per_declared_cluster(example: tuple[Repository, Rendered]) -> None:
    repository, rendered = example
    found = _managed_clusters(rendered)
    assert set(found) == {f"clusters/{c}/managedcluster-{c}.yaml" for c in repository.clusters}
    for name, cluster in repository.clusters.items():
        body = found[f"clusters/{name}/managedcluster-{name}.yaml"]
        # Labels and annotations only: spec (hubAcceptsClient, taints) is the hub administrator's and OCM's,
        # status the klusterlet's. A field Git does not name, a server-side apply never touches.
        assert set(body) == {"apiVersion", "kind", "metadata"}
        assert set(body["metadata"]) == {"name", "labels", "annotations"} and body["metadata"]["name"] == name
        labels = body["metadata"]["labels"]
        declared = {k: v for k, v in labels.items() if not k.startswith("app.kubernetes.io/")}
        assert declared == {**cluster.labels, CLUSTER_SET_LABEL: cluster.cluster_set}


def test_no_gitops_tool_may_delete_a_managed_cluster(example: tuple[Repository, Rendered]) -> None:
    for body in _managed_clusters(example[1]).values():
        annotations = body["metadata"]["annotations"]
        argo = {option.strip() for option in annotations["argocd.argoproj.io/sync-options"].split(",")}
        # Not pruned when its file leaves clusters/, not deleted with its Application, applied server-side.
        assert {"Prune=false", "Delete=false", "ServerSideApply=true"} <= argo
        assert annotations["argocd.argoproj.io/compare-options"] == "ServerSideDiff=true"
        assert annotations["kustomize.toolkit.fluxcd.io/prune"] == "Disabled"
        assert annotations["kustomize.toolkit.fluxcd.io/ssa"] == "Merge"  # fields others added stay


def test_valid_against_the_managed_cluster_crd(example: tuple[Repository, Rendered], crds_dir: Path) -> None:
    assert_valid(_managed_clusters(example[1]).items(), crds_dir)


# --- a model of the hub: server-side apply of metadata.labels, then OCM's scheduling ------------------------


class Labels:
    """One ManagedCluster's labels as the API server keeps them under server-side apply: a granular map whose
    every key is owned by the managers that set it (kubernetes.io, Server-Side Apply: field management,
    conflicts, and "a field removed from an applied configuration is removed if no other manager owns it")."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.owners: dict[str, set[str]] = {}

    def update(self, manager: str, labels: dict[str, str]) -> None:
        """An update (``kubectl label``, a controller): sets keys and takes them over."""
        for key, value in labels.items():
            self.values[key] = value
            self.owners[key] = {manager}

    def apply(self, manager: str, labels: dict[str, str], *, force: bool) -> None:
        """A server-side apply of exactly ``labels`` by ``manager``."""
        for key, value in labels.items():
            if key in self.values and self.values[key] != value and self.owners[key] - {manager}:
                if not force:
                    raise AssertionError(f"conflict on {key}")
                self.owners[key] = set()  # --force-conflicts: the others lose the field
            self.values[key] = value
            self.owners.setdefault(key, set()).add(manager)
        for key in [k for k, owners in self.owners.items() if manager in owners and k not in labels]:
            self.owners[key].discard(manager)
            if not self.owners[key]:
                del self.values[key], self.owners[key]


class Hub:
    """Registered clusters, and what the hub target renders applied to them as Argo CD or Flux applies it."""

    def __init__(self, names: list[str]) -> None:
        self.labels: dict[str, Labels] = {}
        for name in names:
            labels = Labels()
            # What OCM itself puts on a registered cluster (the default cluster set, an add-on's feature label),
            # and a label its owners set by hand.
            labels.update("registration-controller", {CLUSTER_SET_LABEL: "default"})
            labels.update("addon-manager", {"feature.open-cluster-management.io/addon-fleet-collaborator": "available"})
            labels.update("kubectl-label", {"owner": f"team-{name}"})
            self.labels[name] = labels
        self.claims: dict[str, dict[str, str]] = {name: {} for name in names}

    def sync(self, rendered: Rendered, manager: str = "argocd-controller") -> None:
        """Apply the rendered ManagedClusters (their labels) and what the klusterlet then reports (the ClusterClaims
        of the ManifestWorks); a ManagedCluster no longer rendered is left alone (prune and delete are off), a
        ManifestWork no longer rendered is pruned, and the work agent deletes the ClusterClaims it applied."""
        worked = {b["metadata"]["namespace"] for b in rendered.values() if b["kind"] == "ManifestWork"}
        for name in self.claims:
            if name not in worked:
                self.claims[name] = {}
        for body in rendered.values():
            name = body["metadata"]["name"]
            if body["kind"] == "ManagedCluster":
                # Argo CD: --force-conflicts; Flux: kustomize-controller, likewise forcing its own fields.
                self.labels[name].apply(manager, body["metadata"]["labels"], force=True)
            elif body["kind"] == "ManifestWork":
                cluster = body["metadata"]["namespace"]
                manifests = body["spec"]["workload"]["manifests"]
                self.claims[cluster] = {
                    m["metadata"]["name"]: m["spec"]["value"] for m in manifests if m["kind"] == "ClusterClaim"
                }

    def clusters(self, repository: Repository) -> list[HubCluster]:
        views = []
        for name, labels in self.labels.items():
            declared = repository.clusters.get(name)
            amounts = (
                {"cpu": float(declared.capacity.cpu.value), "memory": float(declared.capacity.memory.value)}
                if declared
                else {"cpu": 1.0, "memory": 1.0}
            )
            claims = self.claims[name]
            mc = {
                "metadata": {"name": name, "labels": dict(labels.values)},
                "status": {"clusterClaims": [{"name": k, "value": v} for k, v in claims.items()]},
            }
            views.append(HubCluster(name, dict(labels.values), dict(claims), mc, amounts, dict(amounts)))
        return views


def _schedule(hub: Hub, repository: Repository, rendered: Rendered, job: str) -> list[str]:
    """OCM's decision for the job's rendered Placement, from the rendered bindings and ManagedClusterSets."""
    placement = next(b for b in rendered.values() if b["kind"] == "Placement" and b["metadata"]["name"] == job)
    namespace = placement["metadata"]["namespace"]
    bound = [
        b["spec"]["clusterSet"]
        for b in rendered.values()
        if b["kind"] == "ManagedClusterSetBinding" and b["metadata"]["namespace"] == namespace
    ]
    sets = {
        b["metadata"]["name"]: ClusterSet.from_object(b) for b in rendered.values() if b["kind"] == "ManagedClusterSet"
    }
    sets["default"] = ClusterSet("default")  # OCM's own, bound nowhere here
    context = HubContext(namespace, job, cluster_sets=sets)
    return sorted(evaluate(placement["spec"], bound, hub.clusters(repository), context=context).selected)


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    source = Path(__file__).resolve().parents[3]
    for folder in ("jobs", "clusters", "policies"):
        shutil.copytree(source / folder, root / folder)
    return root


def test_a_hub_holding_the_rendered_manifests_places_the_job_where_fleet_plan_says(
    example_copy: Path, render_repo: Callable[[Path], tuple[Repository, Rendered]]
) -> None:
    repository, rendered = render_repo(example_copy)
    hub = Hub(sorted(repository.clusters))
    # Registered, but nothing applied yet: every cluster is in OCM's default set, none in the job's.
    assert _schedule(hub, repository, rendered, "mnist-digits") == []
    hub.sync(rendered)
    [job_plan] = plan(repository, ["mnist-digits"], [(p, b) for p, b in rendered.items()])
    assert _schedule(hub, repository, rendered, "mnist-digits") == sorted(job_plan.selected)
    assert sorted(job_plan.selected) == ["eu-central-lab", "eu-west-hospital", "eu-west-university"]
    for name, cluster in repository.clusters.items():
        labels = hub.labels[name]
        assert labels.values[CLUSTER_SET_LABEL] == cluster.cluster_set  # Git's set won over OCM's default
        assert labels.owners[CLUSTER_SET_LABEL] == {"argocd-controller"}
        # Labels others set stay, and stay theirs.
        assert labels.values["owner"] == f"team-{name}" and labels.owners["owner"] == {"kubectl-label"}
        assert labels.values["feature.open-cluster-management.io/addon-fleet-collaborator"] == "available"


def test_a_label_no_longer_declared_goes_and_the_cluster_stays(
    example_copy: Path, render_repo: Callable[[Path], tuple[Repository, Rendered]]
) -> None:
    repository, rendered = render_repo(example_copy)
    hub = Hub(sorted(repository.clusters))
    hub.sync(rendered)
    path = example_copy / "clusters" / "eu-west-hospital.yaml"
    document = yaml.safe_load(path.read_text())
    del document["labels"]["tier"]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    repository, rendered = render_repo(example_copy)
    hub.sync(rendered)
    assert "tier" not in hub.labels["eu-west-hospital"].values
    assert hub.labels["eu-west-hospital"].values["owner"] == "team-eu-west-hospital"
    assert hub.labels["eu-west-hospital"].values["region"] == "eu-west"


def test_a_removed_cluster_file_removes_no_managed_cluster(
    example_copy: Path, render_repo: Callable[[Path], tuple[Repository, Rendered]]
) -> None:
    repository, rendered = render_repo(example_copy)
    hub = Hub(sorted(repository.clusters))
    hub.sync(rendered)
    (example_copy / "clusters" / "us-west-edge.yaml").unlink()
    repository, rendered = render_repo(example_copy)
    assert not any(b["kind"] == "ManagedCluster" and b["metadata"]["name"] == "us-west-edge" for b in rendered.values())
    hub.sync(rendered)
    # The object the tools were told never to delete is still there, with the labels Git applied: a hub
    # administrator removes them (`fleet plan --hub` names them and the command); its claims went with its
    # ManifestWork, so no job's Placement selects it.
    edge = hub.labels["us-west-edge"]
    assert edge.values["region"] == "us-west" and edge.owners["region"] == {"argocd-controller"}
    assert hub.claims["us-west-edge"] == {}
