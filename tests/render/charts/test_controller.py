"""The controller/ folder: the generated FederatedLearning CRD, least-privilege RBAC and the Deployment."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from chart_helpers import Rendered, assert_valid, in_folder, one

import fleet
from fleet.claims import API_GROUP
from fleet.crd import federated_learning_crd_spec
from fleet.hub import CONTROLLER_NAME, CONTROLLER_NAMESPACE
from fleet.repository import Repository
from fleet.validation import Status, validate_documents

Example = tuple[Repository, Rendered]


def _controller(example: Example) -> Rendered:
    return in_folder(example[1], "controller")


def test_folder_holds_the_controller_install_and_nothing_else(example: Example) -> None:
    objects = _controller(example)
    assert sorted(objects) == [
        "controller/clusterrole-fleet-controller.yaml",
        "controller/clusterrolebinding-fleet-controller.yaml",
        f"controller/customresourcedefinition-federatedlearnings.{API_GROUP}.yaml",
        "controller/deployment-fleet-controller.yaml",
        "controller/namespace-fleet-system.yaml",
        "controller/serviceaccount-fleet-controller.yaml",
    ]
    for body in objects.values():
        metadata = body["metadata"]
        assert metadata["annotations"]["fleet.dev/source"] == "render/charts/controller.py"
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "fleet"
        assert metadata["labels"]["app.kubernetes.io/component"] == "controller"
        if body["kind"] in ("ServiceAccount", "Deployment"):
            assert metadata["namespace"] == CONTROLLER_NAMESPACE


# --- the CRD ------------------------------------------------------------------------------------------------


def test_crd_names_and_serves_the_projects_kind(example: Example) -> None:
    crd = one(_controller(example), "CustomResourceDefinition")
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "federatedlearnings.federation.fleet.dev"
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
    crd = one(_controller(example), "CustomResourceDefinition")
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
    crd = one(_controller(example), "CustomResourceDefinition")
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
    crd = one(_controller(example), "CustomResourceDefinition")
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

_CRUD = {"get", "list", "watch", "create", "update", "patch", "delete"}
EXPECTED_PERMISSIONS = {
    (API_GROUP, "federatedlearnings"): {"get", "list", "watch", "patch", "update"},
    (API_GROUP, "federatedlearnings/status"): {"get", "patch", "update"},
    (API_GROUP, "federatedlearnings/finalizers"): {"update"},
    ("cluster.open-cluster-management.io", "placements"): {"get", "list", "watch"},
    ("cluster.open-cluster-management.io", "placementdecisions"): {"get", "list", "watch"},
    ("cluster.open-cluster-management.io", "managedclusters"): {"get", "list", "watch"},
    ("work.open-cluster-management.io", "manifestworks"): _CRUD,
    ("apps", "deployments"): _CRUD,
    ("", "services"): _CRUD,
    ("", "persistentvolumeclaims"): _CRUD,
    ("", "secrets"): _CRUD,
    ("", "configmaps"): _CRUD,
    ("route.openshift.io", "routes"): _CRUD,
    ("networking.k8s.io", "ingresses"): _CRUD,
    ("", "events"): {"create", "patch"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("certificates.k8s.io", "certificatesigningrequests"): {"get", "list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}


def _permissions(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_cluster_role_grants_exactly_what_the_controller_needs(example: Example) -> None:
    role = one(_controller(example), "ClusterRole")
    assert "*" not in json.dumps(role["rules"])
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])  # no resourceNames/URLs
    assert _permissions(role["rules"]) == EXPECTED_PERMISSIONS


def test_cluster_role_binding_grants_the_role_to_the_controllers_account(example: Example) -> None:
    objects = _controller(example)
    binding = one(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one(objects, "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": CONTROLLER_NAMESPACE}
    ]


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
