"""The controller/ folder: the generated FederatedLearning CRD, least-privilege RBAC and the Deployment; and the
controller's Roles in the namespaces it writes in."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from chart_helpers import Rendered, assert_valid, in_folder, one

import fleet
from fleet.claims import API_GROUP
from fleet.crd import federated_learning_crd_spec
from fleet.hub import CONTROLLER_NAME, CONTROLLER_NAMESPACE
from fleet.repository import Repository
from fleet.validation import Status, validate_documents

Example = tuple[Repository, Rendered]
RenderRepo = Callable[[Path], tuple[Repository, Rendered]]


def _controller(example: Example) -> Rendered:
    return in_folder(example[1], "controller")


def test_folder_holds_the_controller_install_and_nothing_else(example: Example) -> None:
    objects = _controller(example)
    assert sorted(objects) == [
        "controller/clusterrole-fleet-controller-cluster-labels.yaml",
        "controller/clusterrole-fleet-controller.yaml",
        "controller/clusterrolebinding-fleet-controller-cluster-labels.yaml",
        "controller/clusterrolebinding-fleet-controller.yaml",
        f"controller/customresourcedefinition-federatedlearnings.{API_GROUP}.yaml",
        f"controller/customresourcedefinition-managedclusterlabels.{API_GROUP}.yaml",
        "controller/deployment-fleet-controller.yaml",
        "controller/namespace-fleet-system.yaml",
        "controller/role-fleet-controller.yaml",
        "controller/role-fleet-hub-ca-signer.yaml",
        "controller/rolebinding-fleet-controller.yaml",
        "controller/rolebinding-fleet-hub-ca-signer.yaml",
        "controller/serviceaccount-fleet-controller.yaml",
    ]
    for body in objects.values():
        metadata = body["metadata"]
        assert metadata["annotations"]["fleet.dev/source"] == "render/charts/controller.py"
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "fleet"
        assert metadata["labels"]["app.kubernetes.io/component"] == "controller"
        if body["kind"] in ("ServiceAccount", "Deployment", "Role", "RoleBinding"):
            assert metadata["namespace"] == CONTROLLER_NAMESPACE


# --- the CRD ------------------------------------------------------------------------------------------------


def test_crd_names_and_serves_the_projects_kind(example: Example) -> None:
    crd = one(_controller(example), "CustomResourceDefinition", "federatedlearnings.federation.fleet.dev")
    spec = crd["spec"]
    assert spec["group"] == API_GROUP == "federation.fleet.dev"
    assert spec["names"] == {
        "kind": "FederatedLearning",
        "listKind": "FederatedLearningList",
        "plural": "federatedlearnings",
        "singular": "federatedlearning",
        "shortNames": ["fedl"],
    }
    assert spec["scope"] == "Namespaced"
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ("string", ".status.phase"),
        "Round": ("integer", ".status.currentRound"),
        "Rounds": ("integer", ".spec.server.rounds"),
        "Dataset": ("string", ".spec.dataset"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def _structural_problems(node: Any, where: str = "") -> list[str]:
    """Kubernetes' structural-schema rules, checked node by node."""
    problems = []
    if not isinstance(node, dict):
        return [f"{where}: not a schema"]
    for banned in ("$ref", "$defs", "definitions", "anyOf", "oneOf", "allOf", "const", "title"):
        if banned in node:
            problems.append(f"{where}: {banned!r}")
    if "type" not in node and not (
        node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    ):
        problems.append(f"{where}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties beside additionalProperties")
    # An object without fields would prune everything given; the root's metadata is the API server's own.
    if (
        where != ".metadata"
        and node.get("type") == "object"
        and not (
            "properties" in node or "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
        )
    ):
        problems.append(f"{where}: an object without properties")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{where}: an array without items")
    for name, child in (node.get("properties") or {}).items():
        problems.extend(_structural_problems(child, f"{where}.{name}"))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems.extend(_structural_problems(node[key], f"{where}[]"))
    return problems


def test_crd_schema_is_structural_and_generated_from_the_models(example: Example) -> None:
    crd = one(_controller(example), "CustomResourceDefinition", "federatedlearnings.federation.fleet.dev")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _structural_problems(schema) == []
    spec = schema["properties"]["spec"]
    # The upstream field names, and what the controller adds, straight from FederatedLearningSpec.
    assert {"framework", "server", "client", "dataset", "maxClients", "training", "tls"} <= set(spec["properties"])
    assert {"rounds", "minAvailableClients", "listeners", "storage"} <= set(spec["properties"]["server"]["properties"])
    assert spec["properties"]["client"]["properties"]["placement"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    status = schema["properties"]["status"]["properties"]
    assert {"phase", "currentRound", "rounds", "conditions", "observedGeneration"} <= set(status)
    assert status["phase"]["enum"] == ["Waiting", "Running", "Completed", "Failed"]


def test_structural_checker_catches_a_non_structural_schema() -> None:
    assert _structural_problems({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}})
    assert _structural_problems({"type": "object"})


def test_crd_spec_is_a_fresh_copy_each_time() -> None:
    first = federated_learning_crd_spec()
    first["names"]["kind"] = "Changed"
    assert federated_learning_crd_spec()["names"]["kind"] == "FederatedLearning"


def test_rendered_jobs_validate_against_the_generated_crd(example: Example) -> None:
    _, rendered = example
    crd = one(_controller(example), "CustomResourceDefinition", "federatedlearnings.federation.fleet.dev")
    jobs = [(p, b) for p, b in rendered.items() if b["kind"] == "FederatedLearning"]
    assert jobs, "the example renders a FederatedLearning"
    report = validate_documents([("crd.yaml", crd), *jobs], None, kubeconform=False)
    assert [r.status for r in report.resources] == [Status.VALID] * (1 + len(jobs)), report.lines()

    # ... and the CRD is strict: a misspelt field is refused, a placement field is kept as written.
    path, job = jobs[0]
    wrong = copy.deepcopy(job)
    wrong["spec"]["server"]["roundz"] = 3
    wrong["spec"]["client"]["placement"]["anything"] = {"kept": True}
    report = validate_documents([("crd.yaml", crd), (path, wrong)], None, kubeconform=False)
    result = report.resources[1]
    assert result.status is Status.INVALID
    assert [e.path for e in result.errors] == ["spec.server.roundz"]


def test_printer_columns_point_at_fields_the_resources_have(example: Example) -> None:
    _, rendered = example
    job = next(b for b in rendered.values() if b["kind"] == "FederatedLearning")
    crd = one(_controller(example), "CustomResourceDefinition", "federatedlearnings.federation.fleet.dev")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        *parents, leaf = column["jsonPath"].lstrip(".").split(".")
        if parents[0] == "metadata":
            continue
        node = schema
        for part in [*parents, leaf]:
            node = node["properties"][part]
        if parents[0] == "spec":  # rendered jobs carry their spec columns
            value: Any = job
            for part in [*parents, leaf]:
                value = value[part]
            assert value is not None


# --- RBAC ---------------------------------------------------------------------------------------------------
# Grants as "<group>/<resource>" ("<resource>" in the core group), with "[<names>]" when a rule names objects.

EXPECTED_CLUSTER_ROLE = {
    "namespaces": {"get"},
    "configmaps": {"list", "watch"},
    "addon.open-cluster-management.io/managedclusteraddons": {"list", "watch"},
    "persistentvolumeclaims": {"list", "watch"},
    "secrets": {"list", "watch"},
    "services": {"list", "watch"},
    "apiextensions.k8s.io/customresourcedefinitions": {"list", "watch"},
    "apps/deployments": {"list", "watch"},
    "certificates.k8s.io/certificatesigningrequests": {"list", "watch"},
    "cluster.open-cluster-management.io/managedclusters": {"list", "watch"},
    "cluster.open-cluster-management.io/placementdecisions": {"list", "watch"},
    "federation.fleet.dev/federatedlearnings": {"list", "watch"},
    "federation.fleet.dev/managedclusterlabels": {"list", "watch"},
    "networking.k8s.io/ingresses": {"list", "watch"},
    "route.openshift.io/routes": {"list", "watch"},
    "work.open-cluster-management.io/manifestworks": {"list", "watch"},
}
"""Cluster-wide: reads only."""
_WRITE = {"create", "patch", "delete"}


def expected_controller_namespace_role(clusters: Iterable[str]) -> dict[str, set[str]]:
    """The controller's own namespace: the hub CA (read), its operator certificate (read, renewed), and one
    identity record per cluster of the repository (made, replaced on renewal)."""
    records = ",".join(sorted(f"fleet-identity-{c}" for c in clusters))
    return {
        "configmaps": {"create"},
        f"configmaps[{records}]": {"patch"},
        "secrets": {"create"},
        "secrets[fleet-hub-ca,fleet-operator]": {"get"},
        "secrets[fleet-operator]": {"patch"},
    }


EXPECTED_JOB_NAMESPACE_ROLE = {
    "events": {"create"},
    "configmaps": _WRITE,
    "persistentvolumeclaims": _WRITE,
    "secrets": _WRITE,
    "services": _WRITE,
    "apps/deployments": _WRITE,
    "federation.fleet.dev/federatedlearnings": {"patch"},
    "federation.fleet.dev/federatedlearnings/status": {"patch"},
    "federation.fleet.dev/federatedlearnings/finalizers": {"update"},
    "networking.k8s.io/ingresses": _WRITE,
    "route.openshift.io/routes": _WRITE,
}
EXPECTED_CLUSTER_NAMESPACE_ROLE = {
    "work.open-cluster-management.io/manifestworks": _WRITE,
}
EXAMPLE_CLUSTERS = ("eu-central-lab", "eu-west-hospital", "eu-west-university", "us-east-clinic", "us-west-edge")
EXPECTED_ROLES = {
    CONTROLLER_NAMESPACE: expected_controller_namespace_role(EXAMPLE_CLUSTERS),
    "fl-mnist-digits": EXPECTED_JOB_NAMESPACE_ROLE,
    "fl-mnist-digits-openfl": EXPECTED_JOB_NAMESPACE_ROLE,
    **dict.fromkeys(EXAMPLE_CLUSTERS, EXPECTED_CLUSTER_NAMESPACE_ROLE),
}
"""The example's Roles, by namespace: the controller's, the job's, each cluster's."""
_WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "bind", "escalate", "impersonate"}
_SENSITIVE = {"secrets", "configmaps", "services", "persistentvolumeclaims", "deployments", "manifestworks"}


def _grants(rules: list[dict[str, Any]]) -> dict[str, set[str]]:
    granted: dict[str, set[str]] = {}
    for rule in rules:
        names = f"[{','.join(rule['resourceNames'])}]" if "resourceNames" in rule else ""
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = f"{group}/{resource}{names}" if group else f"{resource}{names}"
                granted.setdefault(key, set()).update(rule["verbs"])
    return granted


def _roles(rendered: Rendered) -> dict[str, tuple[str, dict[str, Any]]]:
    """The controller's Roles by namespace: (path, body)."""
    roles: dict[str, tuple[str, dict[str, Any]]] = {}
    for path, body in rendered.items():
        if body["kind"] == "Role" and body["metadata"]["name"] == CONTROLLER_NAME:
            namespace = body["metadata"]["namespace"]
            assert namespace not in roles, f"two Roles in {namespace}"
            roles[namespace] = (path, body)
    return roles


def _rbac(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    kinds = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    return [(path, body) for path, body in rendered.items() if body["kind"] in kinds]


def test_cluster_role_grants_exactly_the_controllers_cluster_wide_reads(example: Example) -> None:
    role = one(_controller(example), "ClusterRole", CONTROLLER_NAME)
    assert _grants(role["rules"]) == EXPECTED_CLUSTER_ROLE


def test_roles_grant_exactly_the_controllers_writes_in_exactly_its_namespaces(example: Example) -> None:
    roles = _roles(example[1])
    assert {namespace: _grants(body["rules"]) for namespace, (_, body) in roles.items()} == EXPECTED_ROLES


def test_no_rule_has_a_wildcard_a_url_or_an_unsorted_list(example: Example) -> None:
    for path, body in _rbac(example[1]):
        if "rules" not in body:
            continue
        assert "*" not in json.dumps(body["rules"]), path
        keys = [(rule["apiGroups"], rule["resources"]) for rule in body["rules"]]
        assert keys == sorted(keys), f"{path}: rules out of order"
        for rule in body["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "resourceNames", "verbs"}, path  # no nonResourceURLs
            assert len(rule["apiGroups"]) == 1, path
            assert rule["resources"] == sorted(set(rule["resources"])), path


def test_cluster_role_writes_nothing(example: Example) -> None:
    role = one(_controller(example), "ClusterRole", CONTROLLER_NAME)
    for rule in role["rules"]:
        writes = _WRITE_VERBS & set(rule["verbs"])
        assert not (writes and _SENSITIVE & set(rule["resources"])), f"a cluster-wide write on what jobs own: {rule}"
        assert not writes, f"a cluster-wide write: {rule}"


def test_roles_follow_the_repositorys_job_and_cluster_namespaces(example_repo: Path, render_repo: RenderRepo) -> None:
    job = yaml.safe_load((example_repo / "jobs" / "mnist-digits.yaml").read_text())
    second = {
        **job,
        "name": "second",
        "namespace": "fl-second",
        "storage": {"pvc": {"name": "second", "size": "1Gi", "path": "/models/second"}},
    }
    second["listeners"] = [{"name": "server", "type": "NodePort", "port": 30095}]  # 30093/4: the example's
    (example_repo / "jobs" / "second.yaml").write_text(yaml.safe_dump(second))
    beside = {**second, "name": "beside", "namespace": "fl-mnist-digits"}  # a second job in a namespace
    beside["listeners"] = [{"name": "server", "type": "NodePort", "port": 30096}]
    (example_repo / "jobs" / "beside.yaml").write_text(yaml.safe_dump(beside))
    cluster = yaml.safe_load((example_repo / "clusters" / "us-west-edge.yaml").read_text())
    (example_repo / "clusters" / "ap-south-edge.yaml").write_text(yaml.safe_dump({**cluster, "name": "ap-south-edge"}))
    repository, rendered = render_repo(example_repo)

    roles = _roles(rendered)
    job_namespaces = {j.namespace for j in repository.jobs.values()}
    assert job_namespaces == {"fl-mnist-digits", "fl-mnist-digits-openfl", "fl-second"}
    assert set(roles) == job_namespaces | set(repository.clusters) | {CONTROLLER_NAMESPACE}
    assert "ap-south-edge" in roles
    expected = {
        namespace: EXPECTED_JOB_NAMESPACE_ROLE
        if namespace in job_namespaces
        else EXPECTED_CLUSTER_NAMESPACE_ROLE
        if namespace in repository.clusters
        else expected_controller_namespace_role(repository.clusters)
        for namespace in roles
    }
    assert {namespace: _grants(body["rules"]) for namespace, (_, body) in roles.items()} == expected
    # Each Role is written with what else its namespace gets, traced to the files that made the namespace one.
    assert {namespace: path for namespace, (path, _) in roles.items()} == {
        CONTROLLER_NAMESPACE: "controller/role-fleet-controller.yaml",
        **{ns: f"namespaces/{ns}/role-fleet-controller.yaml" for ns in job_namespaces},
        **{c: f"clusters/{c}/role-fleet-controller.yaml" for c in repository.clusters},
    }
    sources = {namespace: body["metadata"]["annotations"]["fleet.dev/source"] for namespace, (_, body) in roles.items()}
    assert sources["fl-mnist-digits"] == "jobs/beside.yaml,jobs/mnist-digits.yaml"
    assert sources["fl-second"] == "jobs/second.yaml"
    assert sources["fl-mnist-digits-openfl"] == "jobs/mnist-digits-openfl.yaml"
    assert sources["ap-south-edge"] == "clusters/ap-south-edge.yaml"

    # ... and a namespace without jobs loses its Role with them.
    for name in ("second", "beside", "mnist-digits", "mnist-digits-openfl"):
        (example_repo / "jobs" / f"{name}.yaml").unlink()
    (example_repo / "policies" / "digits-residency.yaml").unlink()  # it would govern no job
    repository, rendered = render_repo(example_repo)
    assert set(_roles(rendered)) == set(repository.clusters) | {CONTROLLER_NAMESPACE}


def test_every_role_and_the_cluster_role_are_bound_to_the_controllers_account_only(example: Example) -> None:
    _, rendered = example
    account = [{"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": CONTROLLER_NAMESPACE}]
    assert one(_controller(example), "ServiceAccount")["metadata"]["name"] == CONTROLLER_NAME
    binding = one(_controller(example), "ClusterRoleBinding", CONTROLLER_NAME)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one(_controller(example), "ClusterRole", CONTROLLER_NAME)["metadata"]["name"],
    }
    assert binding["subjects"] == account
    bindings = {
        body["metadata"]["namespace"]: (path, body)
        for path, body in rendered.items()
        if body["kind"] == "RoleBinding" and body["metadata"]["name"] == CONTROLLER_NAME
    }
    roles = _roles(rendered)
    assert set(bindings) == set(roles)
    for namespace, (path, body) in bindings.items():
        assert path == roles[namespace][0].replace("/role-", "/rolebinding-")
        assert body["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROLLER_NAME}
        assert body["subjects"] == account


def test_oc_ms_add_on_manager_may_read_the_hub_ca_secret_and_nothing_else(example: Example, crds_dir: Path) -> None:
    # The AddOnTemplate CRD's customSigner.signingCA (ocm api addon/v1alpha1, ../shared/crds): "The addon manager
    # will not have permission to access the secret by default, so the user must grant the permission to the
    # addon manager (by creating rolebinding/clusterrolebinding for the addon-manager serviceaccount
    # "addon-manager-controller-sa")". Its namespace: the cluster manager's, open-cluster-management-hub (ocm
    # pkg/operator/helpers/queuekey.go ClusterManagerDefaultNamespace; manifests/cluster-manager/hub/addon-manager/
    # serviceaccount.yaml). It reads the Secret with one get by name (ocm pkg/addon/templateagent/registration.go:
    # CustomSignerWithExpiry), so get on that one name is all it needs.
    crd = yaml.safe_load(
        (
            crds_dir
            / "addon.open-cluster-management.io"
            / "0000_03_addon.open-cluster-management.io_addontemplates.crd.yaml"
        ).read_text(encoding="utf-8")
    )
    registration = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    signing_ca = registration["registration"]["items"]["properties"]["customSigner"]["properties"]["signingCA"]
    assert '"addon-manager-controller-sa"' in signing_ca["description"]
    _, rendered = example
    account = [
        {"kind": "ServiceAccount", "name": "addon-manager-controller-sa", "namespace": "open-cluster-management-hub"}
    ]
    bindings = [b for _, b in _rbac(rendered) if b.get("subjects") == account]
    assert [(b["kind"], b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings] == [
        ("RoleBinding", CONTROLLER_NAMESPACE, "fleet-hub-ca-signer")
    ]
    role = one(_controller(example), "Role", "fleet-hub-ca-signer")
    assert _grants(role["rules"]) == {"secrets[fleet-hub-ca]": {"get"}}
    # ... the Secret the add-on's registration names as its signing CA.
    template = next(b for b in rendered.values() if b["kind"] == "AddOnTemplate")
    (signer,) = template["spec"]["registration"]
    assert signer["customSigner"]["signingCA"] == {"name": "fleet-hub-ca", "namespace": CONTROLLER_NAMESPACE}


def test_rbac_objects_are_valid_kubernetes(example: Example, crds_dir: Path) -> None:
    assert_valid(_rbac(example[1]), crds_dir)


# --- the Deployment -----------------------------------------------------------------------------------------


def test_deployment_runs_the_controller_hardened(example: Example) -> None:
    deployment = one(_controller(example), "Deployment", CONTROLLER_NAME)
    pod = deployment["spec"]["template"]["spec"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pod["serviceAccountName"] == CONTROLLER_NAME
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == f"ghcr.io/fleet-fl/fleet-controller:{fleet.__version__}"
    assert container["command"] == ["fleet", "controller"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        check = container[probe]["httpGet"]
        assert (check["path"], ports[check["port"]]) == ("/healthz", 8080)
    assert set(container["resources"]) == {"requests", "limits"}
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    # every mount has its volume
    volumes = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes


def test_controller_folder_is_valid_kubernetes(example: Example, crds_dir: Path) -> None:
    assert_valid(_controller(example).items(), crds_dir)
