"""fleet.validation: strict validation of manifests against upstream CRDs, own CRDs and Kubernetes schemas."""

from __future__ import annotations

import copy
import datetime
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.validation import (
    CRDS_DIR_VARIABLE,
    ManifestError,
    ResourceResult,
    Status,
    ValidationReport,
    default_crds_dir,
    load_manifests,
    validate_documents,
)

PLACEMENT = """
apiVersion: cluster.open-cluster-management.io/v1beta1
kind: Placement
metadata:
  name: mnist-digits
  namespace: fl-mnist-digits
  labels: {app.kubernetes.io/name: fleet, app.kubernetes.io/instance: mnist-digits}
  annotations: {fleet.dev/source: jobs/mnist-digits.yaml}
spec:
  numberOfClusters: 3
  clusterSets: [eu-set]
  predicates:
    - requiredClusterSelector:
        labelSelector:
          matchExpressions:
            - {key: region, operator: In, values: [eu-west]}
        claimSelector:
          matchExpressions:
            - {key: dataset.fleet.dev.digits, operator: Exists}
  prioritizerPolicy:
    mode: Additive
    configurations:
      - scoreCoordinate: {type: BuiltIn, builtIn: ResourceAllocatableCPU}
        weight: 1
  tolerations:
    - {key: cluster.open-cluster-management.io/unreachable, operator: Exists, tolerationSeconds: 300}
"""

MANIFEST_WORK = """
apiVersion: work.open-cluster-management.io/v1
kind: ManifestWork
metadata: {name: fleet-cluster-claims, namespace: cluster-eu-1}
spec:
  workload:
    manifests:
      - apiVersion: cluster.open-cluster-management.io/v1alpha1
        kind: ClusterClaim
        metadata: {name: dataset.fleet.dev.digits}
        spec: {value: /data/digits}
  deleteOption: {propagationPolicy: Foreground}
"""

ADDON = """
apiVersion: addon.open-cluster-management.io/v1alpha1
kind: ClusterManagementAddOn
metadata: {name: fl-collaborator}
spec:
  addOnMeta: {displayName: Federated learning collaborator, description: A Flower SuperNode per cluster}
  supportedConfigs:
    - group: addon.open-cluster-management.io
      resource: addontemplates
      defaultConfig: {name: fl-collaborator}
  installStrategy:
    type: Placements
    placements:
      - {name: mnist-digits, namespace: fl-mnist-digits}
"""

POLICY = """
apiVersion: policy.open-cluster-management.io/v1
kind: Policy
metadata: {name: digits-residency, namespace: fleet-policies}
spec:
  disabled: false
  remediationAction: inform
  policy-templates:
    - objectDefinition:
        apiVersion: policy.open-cluster-management.io/v1
        kind: ConfigurationPolicy
        metadata: {name: digits-residency}
        spec:
          remediationAction: inform
          severity: low
          object-templates:
            - complianceType: musthave
              objectDefinition: {apiVersion: v1, kind: Namespace, metadata: {name: fl-mnist-digits}}
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: fleet-controller, namespace: fleet-system}
spec:
  replicas: 1
  selector: {matchLabels: {app: fleet-controller}}
  template:
    metadata: {labels: {app: fleet-controller}}
    spec:
      serviceAccountName: fleet-controller
      containers:
        - name: controller
          image: ghcr.io/example/fleet:0.1.0
          ports: [{containerPort: 8080, protocol: TCP}]
          resources: {requests: {cpu: 100m, memory: 128Mi}}
"""

# The project's own kind, described by a CRD that travels with the documents rather than in the CRD folder.
OWN_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: federatedlearnings.federation.fleet.dev}
spec:
  group: federation.fleet.dev
  names:
    kind: FederatedLearning
    plural: federatedlearnings
    singular: federatedlearning
    listKind: FederatedLearningList
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              required: [framework, server]
              properties:
                framework: {type: string, enum: [flower, openfl]}
                server:
                  type: object
                  properties:
                    rounds: {type: integer, minimum: 1, maximum: 1000}
                    timeout: {type: string, pattern: '^[0-9]+(s|m|h)$'}
                    port: {x-kubernetes-int-or-string: true}
                    learningRate: {type: number, minimum: 0, exclusiveMinimum: true}
                    storage: {type: object, nullable: true, properties: {path: {type: string}}}
                    startedAt: {type: string, format: date-time}
                    listeners:
                      type: array
                      x-kubernetes-list-type: map
                      x-kubernetes-list-map-keys: [name]
                      items:
                        type: object
                        required: [name]
                        properties: {name: {type: string}, port: {type: integer, format: int32}}
                extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
                template:
                  type: object
                  x-kubernetes-embedded-resource: true
                  x-kubernetes-preserve-unknown-fields: true
            status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""

OWN = """
apiVersion: federation.fleet.dev/v1alpha1
kind: FederatedLearning
metadata: {name: mnist-digits, namespace: fl-mnist-digits}
spec:
  framework: flower
  server:
    rounds: 5
    timeout: 10m
    port: 8080
    learningRate: 0.01
    storage: null
    startedAt: "2026-01-02T03:04:05Z"
    listeners: [{name: grpc, port: 9092}, {name: metrics, port: 9090}]
"""


def docs(*texts: str) -> list[tuple[str, dict[str, Any]]]:
    return [(f"manifests/{index}.yaml", yaml.safe_load(text)) for index, text in enumerate(texts)]


def only(report: ValidationReport) -> ResourceResult:
    assert len(report.resources) == 1, report.lines()
    return report.resources[0]


def with_change(text: str, path: str, value: Any) -> str:
    """``text`` with the field at dotted ``path`` (list indexes as numbers) set to ``value``."""
    document = yaml.safe_load(text)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = document
    for part in parents:
        node = node[part]
    node[last] = value
    return yaml.safe_dump(document)


def errors_of(result: ResourceResult) -> dict[str, str]:
    return {error.path: error.message for error in result.errors}


# --- upstream CRDs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", [PLACEMENT, MANIFEST_WORK, ADDON, POLICY], ids=["placement", "work", "addon", "policy"]
)
def test_valid_ocm_documents_pass(text: str, crds_dir: Path) -> None:
    report = validate_documents(docs(text), crds_dir, kubeconform=False)
    assert report.ok, report.lines()
    assert only(report).status is Status.VALID


def test_misspelled_field_names_the_resource_and_json_path(crds_dir: Path) -> None:
    text = with_change(PLACEMENT, "spec.predicates.0.requiredClusterSelector.labelSelecter", {})
    report = validate_documents(docs(text), crds_dir, kubeconform=False)
    result = only(report)
    assert result.status is Status.INVALID and not report.ok
    assert (result.api_version, result.kind, result.namespace, result.name) == (
        "cluster.open-cluster-management.io/v1beta1",
        "Placement",
        "fl-mnist-digits",
        "mnist-digits",
    )
    assert list(errors_of(result)) == ["spec.predicates[0].requiredClusterSelector.labelSelecter"]
    assert "unknown field" in result.errors[0].message and "labelSelector" in result.errors[0].message
    assert report.lines() == [
        "manifests/0.yaml: Placement fl-mnist-digits/mnist-digits: "
        f"spec.predicates[0].requiredClusterSelector.labelSelecter: {result.errors[0].message}"
    ]


def test_wrong_type_and_enum(crds_dir: Path) -> None:
    text = with_change(PLACEMENT, "spec.numberOfClusters", "three")
    text = with_change(text, "spec.prioritizerPolicy.configurations.0.scoreCoordinate.type", "Sometimes")
    result = only(validate_documents(docs(text), crds_dir, kubeconform=False))
    assert errors_of(result) == {
        "spec.numberOfClusters": 'expected integer, found string "three"',
        "spec.prioritizerPolicy.configurations[0].scoreCoordinate.type": (
            'expected one of "BuiltIn", "AddOn", found "Sometimes"'
        ),
    }


def test_missing_required_field_is_named(crds_dir: Path) -> None:
    work = yaml.safe_load(MANIFEST_WORK)
    del work["spec"]["workload"]["manifests"][0]["kind"]
    result = only(validate_documents([("w.yaml", work)], crds_dir, kubeconform=False))
    # Embedded resources must say what they are, even where their content is free-form.
    assert errors_of(result) == {"spec.workload.manifests[0].kind": "required field is missing"}


def test_unserved_api_version_is_an_error(crds_dir: Path) -> None:
    text = with_change(PLACEMENT, "apiVersion", "cluster.open-cluster-management.io/v1")
    report = validate_documents(docs(text), crds_dir, kubeconform=False)
    result = only(report)
    assert result.status is Status.ERROR and not report.ok
    assert "does not serve v1" in result.reason
    assert "served: cluster.open-cluster-management.io/v1beta1" in result.reason
    assert report.summary().endswith("Valid: 0, Invalid: 0, Errors: 1, Skipped: 0")


def test_every_served_version_is_accepted(crds_dir: Path) -> None:
    for version in ("v1alpha1", "v1beta1"):
        text = with_change(ADDON, "apiVersion", f"addon.open-cluster-management.io/{version}")
        if version == "v1beta1":  # v1beta1 moved the default config under installStrategy
            document = yaml.safe_load(text)
            document["spec"]["defaultConfigs"] = [
                {"group": "addon.open-cluster-management.io", "resource": "addontemplates", "name": "x"}
            ]
            del document["spec"]["supportedConfigs"]
            text = yaml.safe_dump(document)
        assert validate_documents(docs(text), crds_dir, kubeconform=False).ok, version


def test_preserve_unknown_fields_accepts_extras(crds_dir: Path) -> None:
    policy = yaml.safe_load(POLICY)
    template = policy["spec"]["policy-templates"][0]["objectDefinition"]["spec"]["object-templates"][0]
    template["objectDefinition"]["anything"] = {"goes": ["here", 1]}
    work = yaml.safe_load(MANIFEST_WORK)
    # An embedded object of a kind with no schema anywhere: free-form, as the ManifestWork CRD says.
    thing = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}, "x": {"y": 1}}
    work["spec"]["workload"]["manifests"].append(thing)
    report = validate_documents([("p.yaml", policy), ("w.yaml", work)], crds_dir, kubeconform=False)
    assert report.ok, report.lines()


def test_embedded_resources_are_checked_against_their_own_schemas(crds_dir: Path) -> None:
    work = yaml.safe_load(MANIFEST_WORK)
    work["spec"]["workload"]["manifests"][0]["spec"]["valu"] = "/data"
    work["spec"]["workload"]["manifests"] += [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": 1}},
        {"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "d"}},
    ]
    result = only(validate_documents([("w.yaml", work)], crds_dir, kubeconform=False))
    assert result.status is Status.INVALID
    errors = errors_of(result)
    assert errors["spec.workload.manifests[0].spec.valu"] == "unknown field (expected one of: value)"
    assert errors["spec.workload.manifests[1].data.a"] == "expected string or null, found integer 1"
    assert "does not serve Deployment in v1beta1" in errors["spec.workload.manifests[2].apiVersion"]


def test_metadata_is_checked_as_object_meta(crds_dir: Path) -> None:
    placement = yaml.safe_load(PLACEMENT)
    placement["metadata"]["name"] = "Not_A_Name"
    placement["metadata"]["namespace"] = "fl.mnist"
    placement["metadata"]["labels"]["region"] = "x" * 64
    placement["metadata"]["labels"]["bad key!"] = "v"
    placement["metadata"]["annotations"]["count"] = 3
    placement["metadata"]["colour"] = "blue"
    result = only(validate_documents([("p.yaml", placement)], crds_dir, kubeconform=False))
    errors = errors_of(result)
    assert errors["metadata.name"].startswith('expected a DNS subdomain (RFC 1123), found "Not_A_Name"')
    assert errors["metadata.namespace"].startswith("expected a DNS label")
    assert errors['metadata.labels["region"]'].startswith("expected a label value")
    assert errors['metadata.labels["bad key!"]'].startswith("expected a qualified name")
    assert errors["metadata.annotations.count"].startswith("expected string or null, found integer")
    assert errors["metadata.colour"].startswith("unknown field")


def test_name_is_required(crds_dir: Path) -> None:
    placement = yaml.safe_load(PLACEMENT)
    del placement["metadata"]["name"]
    result = only(validate_documents([("p.yaml", placement)], crds_dir, kubeconform=False))
    assert errors_of(result) == {"metadata.name": "required field is missing"}


# --- a CRD among the documents ----------------------------------------------------------------------------


def test_crd_among_the_documents_is_used() -> None:
    report = validate_documents(docs(OWN_CRD, OWN), None, kubeconform=False)
    assert report.ok, report.lines()
    assert [r.status for r in report.resources] == [Status.VALID, Status.VALID]


@pytest.mark.parametrize(
    ("path", "value", "expected_path", "message"),
    [
        (
            "spec.framework",
            "pytorch",
            "spec.framework",
            'expected one of "flower", "openfl", found "pytorch"',
        ),
        ("spec.server.rounds", 0, "spec.server.rounds", "0 is less than the minimum of 1"),
        ("spec.server.timeout", "10 minutes", "spec.server.timeout", "expected a string matching"),
        ("spec.server.port", 8.5, "spec.server.port", "expected integer or string, found number 8.5"),
        ("spec.server.learningRate", 0, "spec.server.learningRate", "less than or equal to the minimum of 0"),
        (
            "spec.server.startedAt",
            "yesterday",
            "spec.server.startedAt",
            'expected format date-time, found "yesterday"',
        ),
        ("spec.server.listeners.1.port", 2**31, "spec.server.listeners[1].port", "expected format int32"),
        (
            "spec.server.listeners.1.name",
            "grpc",
            "spec.server.listeners[1]",
            "duplicate entry: items 0 and 1",
        ),
        ("spec.server.storage", {"path": 1}, "spec.server.storage.path", "expected string, found integer 1"),
        (
            "spec.template",
            {"kind": "ConfigMap", "x": 1},
            "spec.template.apiVersion",
            "required field is missing",
        ),
        (
            "spec.server.ports",
            [],
            "spec.server.ports",
            "unknown field (expected one of: learningRate, listeners",
        ),
    ],
)
def test_own_crd_features_are_honoured(path: str, value: Any, expected_path: str, message: str) -> None:
    report = validate_documents(docs(OWN_CRD, with_change(OWN, path, value)), None, kubeconform=False)
    result = report.resources[1]
    assert result.status is Status.INVALID, report.lines()
    assert expected_path in errors_of(result), report.lines()
    assert message in errors_of(result)[expected_path]


def test_own_crd_accepts_nullable_int_or_string_and_open_objects() -> None:
    text = with_change(OWN, "spec.server.port", "grpc")
    text = with_change(text, "spec.extra", {"anything": {"at": ["all", 1]}})
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}
    text = with_change(text, "spec.template", config_map)
    report = validate_documents(docs(OWN_CRD, text), None, kubeconform=False)
    assert report.ok, report.lines()


def test_crd_documents_are_themselves_validated() -> None:
    crd = yaml.safe_load(OWN_CRD)
    crd["spec"]["scopee"] = "Namespaced"
    result = validate_documents([("crd.yaml", crd)], None, kubeconform=False).resources[0]
    assert result.status is Status.INVALID
    assert "spec.scopee" in errors_of(result)


# --- core kinds -------------------------------------------------------------------------------------------


def test_core_deployment_passes_and_an_unknown_field_fails() -> None:
    assert validate_documents(docs(DEPLOYMENT), None, kubeconform=False).ok
    text = with_change(DEPLOYMENT, "spec.template.spec.containers.0.imagePullPolicyy", "Always")
    result = only(validate_documents(docs(text), None, kubeconform=False))
    assert result.status is Status.INVALID
    assert list(errors_of(result)) == ["spec.template.spec.containers[0].imagePullPolicyy"]


def test_core_kind_rules() -> None:
    rbac = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "fleet:controller"},  # RBAC names are path segments: a colon is fine
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1st", "namespace": "a"}}
    old = {"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "d"}}
    report = validate_documents([("r.yaml", rbac), ("s.yaml", service), ("o.yaml", old)], None, kubeconform=False)
    assert [r.status for r in report.resources] == [Status.VALID, Status.INVALID, Status.ERROR]
    assert "RFC 1035" in errors_of(report.resources[1])["metadata.name"]
    assert "served: apps/v1" in report.resources[2].reason


def test_unknown_kind_is_skipped_and_reported(crds_dir: Path) -> None:
    thing = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}}
    report = validate_documents([("t.yaml", thing)], crds_dir, kubeconform=False)
    result = only(report)
    assert result.status is Status.SKIPPED and report.ok
    assert report.lines() == [f"t.yaml: Thing t: skipped: {result.reason}"]
    assert "no schema for Thing example.com/v1" in result.reason and str(crds_dir) in result.reason


def test_documents_without_api_version_or_kind_are_errors() -> None:
    report = validate_documents([("x.yaml", {"metadata": {"name": "x"}})], None, kubeconform=False)
    assert only(report).status is Status.ERROR
    assert only(report).reason == "expected string fields apiVersion and kind, missing: apiVersion, kind"


# --- the CRD folder ---------------------------------------------------------------------------------------


def test_default_crds_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRDS_DIR_VARIABLE, raising=False)
    assert default_crds_dir(tmp_path / "repo") == tmp_path / "shared" / "crds"
    monkeypatch.setenv(CRDS_DIR_VARIABLE, str(tmp_path / "env"))
    assert default_crds_dir(tmp_path / "repo") == tmp_path / "env"
    assert default_crds_dir(tmp_path / "repo", tmp_path / "option") == tmp_path / "option"


def test_missing_crd_folder_is_reported_only_when_needed(tmp_path: Path) -> None:
    missing = tmp_path / "no-crds"
    assert validate_documents(docs(DEPLOYMENT, OWN_CRD, OWN), missing, kubeconform=False).ok
    with pytest.raises(ManifestError, match=f"{missing}.*{CRDS_DIR_VARIABLE}"):
        validate_documents(docs(PLACEMENT), missing, kubeconform=False)


def test_crds_are_read_from_any_depth_of_the_folder(tmp_path: Path) -> None:
    nested = tmp_path / "crds" / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "own.yaml").write_text(OWN_CRD)
    (tmp_path / "crds" / "README.md").write_text("not a CRD\n")
    report = validate_documents(docs(OWN), tmp_path / "crds", kubeconform=False)
    assert report.ok and only(report).status is Status.VALID


# --- loading ----------------------------------------------------------------------------------------------


def test_load_manifests_walks_folders_and_multi_document_files(tmp_path: Path) -> None:
    (tmp_path / "m" / "deep").mkdir(parents=True)
    (tmp_path / "m" / "a.yaml").write_text(PLACEMENT + "---\n" + DEPLOYMENT + "---\n")
    (tmp_path / "m" / "deep" / "b.yml").write_text(ADDON)
    (tmp_path / "m" / "notes.txt").write_text("kind: nothing\n")
    single = tmp_path / "single.yaml"
    single.write_text(POLICY)
    loaded = load_manifests([tmp_path / "m", single])
    assert [(Path(file).name, doc["kind"]) for file, doc in loaded] == [
        ("a.yaml", "Placement"),
        ("a.yaml", "Deployment"),
        ("b.yml", "ClusterManagementAddOn"),
        ("single.yaml", "Policy"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind: [unclosed\n", r"bad\.yaml:2: expected valid YAML"),
        ("kind: a\nkind: b\n", r"bad\.yaml:2: expected valid YAML: duplicate key 'kind'"),
        (
            "- just\n- a list\n",
            r"bad\.yaml: document 1: expected a Kubernetes object \(a mapping\), found array",
        ),
    ],
)
def test_load_manifests_rejects_bad_yaml(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(ManifestError, match=message):
        load_manifests([tmp_path])


def test_load_manifests_rejects_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing: no such file or folder"):
        load_manifests([tmp_path / "missing"])


# --- report -----------------------------------------------------------------------------------------------


def test_summary_counts_resources_and_files(crds_dir: Path) -> None:
    bad = with_change(PLACEMENT, "spec.numberOfClusters", "3")
    documents = [("a.yaml", yaml.safe_load(PLACEMENT)), ("a.yaml", yaml.safe_load(bad))]
    documents += [("b.yaml", {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}})]
    report = validate_documents(documents, crds_dir, kubeconform=False)
    assert report.summary() == "Summary: 3 resources found in 2 files - Valid: 1, Invalid: 1, Errors: 0, Skipped: 1"
    assert report.to_json()["summary"] == {
        "resources": 3,
        "files": 2,
        "valid": 1,
        "invalid": 1,
        "error": 0,
        "skipped": 1,
    }


def test_kubeconform_absence_is_said_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: kubeconform cannot be found
    report = validate_documents(docs(DEPLOYMENT), None)
    assert report.notes == ["kubeconform: not on PATH, not run (the built-in strict validation above applies)"]


@pytest.mark.skipif(shutil.which("kubeconform") is None, reason="kubeconform is not on PATH (CI installs it)")
def test_kubeconform_verdicts_are_merged(crds_dir: Path) -> None:
    bad = with_change(PLACEMENT, "spec.numberOfClusters", "three")
    report = validate_documents(docs(PLACEMENT, bad, DEPLOYMENT), crds_dir)
    assert report.notes[0].startswith("kubeconform: Valid: 1, Invalid: 1, Errors: 0, Skipped: 1"), report.notes
    assert [r.status for r in report.resources] == [Status.VALID, Status.INVALID, Status.VALID]
    assert any(e.message.startswith("kubeconform: ") for e in report.resources[1].errors)


# --- the fast acceptance check agrees with jsonschema -----------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=False, width=32) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@functools.cache
def _fuzz_inputs(crds_dir: Path) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    from fleet.validation import _Schemas

    documents = docs(PLACEMENT, MANIFEST_WORK, POLICY, DEPLOYMENT, OWN_CRD, OWN)
    return documents, _Schemas(crds_dir, documents)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_check_agrees_with_jsonschema(data: st.DataObject, crds_dir: Path) -> None:
    """Random edits of valid documents: accepted by the fast check exactly when jsonschema finds no error."""
    documents, schemas = _fuzz_inputs(crds_dir)
    file, original = data.draw(st.sampled_from(documents))
    document = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(document)[1:]))
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            parent[data.draw(st.sampled_from([path[-1], "extra"]))] = data.draw(_json)
        elif isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_json)
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return
    compiled = schemas.lookup(api_version, kind)
    if compiled is None or not hasattr(compiled, "fast"):
        return
    assert compiled.fast is not None
    jsonschema_errors = list(compiled.validator.iter_errors(document))
    assert compiled.fast(document) == (not jsonschema_errors), (file, document, jsonschema_errors[:3])


@pytest.mark.parametrize("key", ["/app", "tier\n", "a/b/c", "Example.COM/app"])
def test_label_keys_kubernetes_refuses_are_invalid(key: str) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "y", "labels": {key: "v"}}}
    result = only(validate_documents([("cm.yaml", body)], None, kubeconform=False))
    assert result.status is Status.INVALID
    assert any("metadata.labels" in e.path for e in result.errors), result.lines()


# --- the cache of parsed CRDs -------------------------------------------------------------------------------


def _validate_with_cache(crds: Path, manifest: Path, cache_home: Path) -> subprocess.CompletedProcess[str]:
    """``fleet validate`` as a user runs it: a fresh process, so only the cache on disk carries a parse over."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    env.pop(CRDS_DIR_VARIABLE, None)
    command = [sys.executable, "-m", "fleet", "validate", "--crds", str(crds), str(manifest)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_a_changed_crd_is_never_validated_from_a_stale_cache(tmp_path: Path) -> None:
    crds, cache_home, manifest = tmp_path / "crds", tmp_path / "cache", tmp_path / "own.yaml"
    crds.mkdir()
    (crds / "own.yaml").write_text(OWN_CRD)
    manifest.write_text(OWN)

    first = _validate_with_cache(crds, manifest, cache_home)
    assert first.returncode == 0, first.stdout + first.stderr
    entries = list((cache_home / "fleet" / "parsed-crds").glob("*.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text()) == [yaml.safe_load(OWN_CRD)]

    (crds / "own.yaml").write_text(OWN_CRD.replace("maximum: 1000", "maximum: 3"))  # the job has 5 rounds
    second = _validate_with_cache(crds, manifest, cache_home)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "spec.server.rounds" in second.stdout, second.stdout
    assert len(list((cache_home / "fleet" / "parsed-crds").glob("*.json"))) == 2  # the old entry is merely unused


def test_a_cached_crd_is_read_back_without_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet import validation

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    file = tmp_path / "own.yaml"
    parsed = validation._crd_documents(file, OWN_CRD)
    assert parsed == [yaml.safe_load(OWN_CRD)]

    def no_parsing(*_: object, **__: object) -> None:
        raise AssertionError("parsed again although the cache holds this text")

    monkeypatch.setattr(validation.yaml, "load_all", no_parsing)
    assert validation._crd_documents(file, OWN_CRD) == parsed


def test_a_damaged_cache_entry_is_parsed_again_and_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet import validation

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    validation._crd_documents(tmp_path / "own.yaml", OWN_CRD)
    (entry,) = (tmp_path / "fleet" / "parsed-crds").glob("*.json")
    entry.write_text('[{"kind": "CustomResourceDefin')  # cut short, as by a full disk
    assert validation._crd_documents(tmp_path / "own.yaml", OWN_CRD) == [yaml.safe_load(OWN_CRD)]
    assert json.loads(entry.read_text()) == [yaml.safe_load(OWN_CRD)]


def test_crds_json_cannot_hold_exactly_are_parsed_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet import validation

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    text = OWN_CRD.replace("  scope: Namespaced\n", "  scope: Namespaced\n  x-released: 2026-01-02\n")  # JSON: a string
    assert validation._crd_documents(tmp_path / "own.yaml", text)[0]["spec"]["x-released"] == datetime.date(2026, 1, 2)
    assert not list(tmp_path.glob("fleet/parsed-crds/*"))


def test_an_unwritable_cache_only_costs_the_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet import validation

    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    assert validation._crd_documents(tmp_path / "own.yaml", OWN_CRD) == [yaml.safe_load(OWN_CRD)]


def test_a_crd_with_a_duplicate_key_is_refused_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet import validation

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    text = OWN_CRD.replace("  scope: Namespaced\n", "  scope: Namespaced\n  scope: Cluster\n")
    with pytest.raises(ManifestError, match=r"bad\.yaml: expected a valid YAML CustomResourceDefinition.*duplicate"):
        validation._crd_documents(tmp_path / "bad.yaml", text)
    assert not (tmp_path / "cache").exists()
