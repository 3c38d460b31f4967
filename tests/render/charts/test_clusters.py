"""clusters/<cluster>/managedclusterlabels-<cluster>.yaml: what a clusters/ file declares about its ManagedCluster's
labels and cluster set, as an object of this project's API that GitOps applies and prunes normally (the
controller applies the labels: tests/fleet/controller/test_cluster_labels*.py). Git renders no ManagedCluster.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from chart_helpers import Rendered, assert_valid, one

from fleet.crd import managed_cluster_labels_crd
from fleet.repository import Repository
from fleet.validation import Status, validate_documents

_TOOL_ANNOTATIONS = ("argocd.argoproj.io/", "kustomize.toolkit.fluxcd.io/")


def _declarations(rendered: Rendered) -> Rendered:
    return {path: body for path, body in rendered.items() if body["kind"] == "ManagedClusterLabels"}


def test_one_declaration_per_cluster_file_and_no_managed_cluster(example: tuple[Repository, Rendered]) -> None:
    repository, rendered = example
    found = _declarations(rendered)
    assert set(found) == {f"clusters/{c}/managedclusterlabels-{c}.yaml" for c in repository.clusters}
    for name, cluster in repository.clusters.items():
        body = found[f"clusters/{name}/managedclusterlabels-{name}.yaml"]
        assert body["apiVersion"] == "federation.fleet.dev/v1alpha1"
        assert "namespace" not in body["metadata"] and body["metadata"]["name"] == name  # cluster-scoped, its name
        assert body["spec"] == {"clusterSet": cluster.cluster_set, "labels": dict(sorted(cluster.labels.items()))}
        assert body["metadata"]["annotations"]["fleet.dev/source"] == f"clusters/{name}.yaml"
    # Nothing Git applies is a ManagedCluster: no GitOps tool can prune, replace or detach one.
    assert not [path for path, body in rendered.items() if body["kind"] == "ManagedCluster"]


def test_declarations_are_pruned_like_any_object(example: tuple[Repository, Rendered]) -> None:
    # Removing a clusters/ file must delete its declaration (whose finalizer removes the labels): no sync option
    # or annotation may keep it.
    for body in _declarations(example[1]).values():
        assert not [k for k in body["metadata"]["annotations"] if k.startswith(_TOOL_ANNOTATIONS)]


def test_a_removed_file_removes_its_declaration(
    example_repo: Path, render_repo: Callable[[Path], tuple[Repository, Rendered]]
) -> None:
    (example_repo / "clusters" / "us-west-edge.yaml").unlink()
    _, rendered = render_repo(example_repo)
    assert "clusters/us-west-edge/managedclusterlabels-us-west-edge.yaml" not in rendered
    assert not [p for p in rendered if p.startswith("clusters/us-west-edge/")]


def test_valid_against_the_generated_crd(example: tuple[Repository, Rendered]) -> None:
    documents = list(_declarations(example[1]).items())
    report = validate_documents([("crd.yaml", managed_cluster_labels_crd()), *documents], None, kubeconform=False)
    assert [r.status for r in report.resources] == [Status.VALID] * (1 + len(documents)), report.lines()
    # Strict: a misspelt field or a label value the API server would refuse is an error.
    path, body = documents[0]
    wrong = {**body, "spec": {**body["spec"], "clusterSett": "x", "labels": {"region": "not a value"}}}
    report = validate_documents([(path, wrong)], None, kubeconform=False)
    assert report.resources[0].status is Status.INVALID
    assert {e.path for e in report.resources[0].errors} == {"spec.clusterSett", "spec.labels.region"}


def test_the_whole_hub_target_validates(example: tuple[Repository, Rendered], crds_dir: Path) -> None:
    # The declarations beside the upstream kinds of their folders.
    clusters = {p: b for p, b in example[1].items() if p.startswith("clusters/")}
    assert_valid(clusters.items(), crds_dir)


def test_the_controllers_only_cluster_wide_writes_are_the_labels(example: tuple[Repository, Rendered]) -> None:
    _, rendered = example
    role = one(rendered, "ClusterRole", "fleet-controller-cluster-labels")
    assert role["rules"] == [
        {"apiGroups": ["cluster.open-cluster-management.io"], "resources": ["managedclusters"], "verbs": ["patch"]},
        {
            "apiGroups": ["cluster.open-cluster-management.io"],
            "resources": ["managedclustersets/join"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["federation.fleet.dev"],
            "resources": ["managedclusterlabels", "managedclusterlabels/status"],
            "verbs": ["patch"],
        },
    ]
    binding = one(rendered, "ClusterRoleBinding", "fleet-controller-cluster-labels")
    assert binding["roleRef"]["name"] == "fleet-controller-cluster-labels"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fleet-controller", "namespace": "fleet-system"}]
    # Nobody the renderer grants anything may create, replace or delete a ManagedCluster.
    for body in rendered.values():
        for rule in body.get("rules") or [] if body["kind"] in ("ClusterRole", "Role") else []:
            if "managedclusters" in rule["resources"]:
                assert not {"create", "update", "delete", "deletecollection"} & set(rule["verbs"]), rule


def test_the_join_grant_follows_ocms_rule_for_the_cluster_set_label(crds_dir: Path) -> None:
    # Why `managedclustersets/join` has no resourceNames: OCM checks it for the set a cluster leaves as well as the
    # one it joins (the ManagedClusterSet CRD's description), and the set left may be OCM's default or one Git
    # no longer declares.
    path = crds_dir / "cluster.open-cluster-management.io"
    [crd] = [p for p in path.glob("*managedclustersets.crd.yaml")]
    described = " ".join(
        v["schema"]["openAPIV3Schema"]["description"] for v in yaml.safe_load(crd.read_text())["spec"]["versions"]
    )
    assert "CREATE on a virtual subresource of managedclustersets/join" in " ".join(described.split())
    assert "permission on both the old and new ManagedClusterSet" in " ".join(described.split())
