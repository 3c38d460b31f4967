"""The JSON Schemas for editors and the structural schemas for CRDs, both generated from the models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft4Validator, Draft202012Validator
from pydantic import BaseModel

from fleet.cli import main
from fleet.models import FederatedLearningStatus, Job
from fleet.repository import FOLDERS
from fleet.schemas import JSON_SCHEMA_DIALECT, definition_schemas, dumps, structural_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILES = {
    "jobs": "job.schema.json",
    "clusters": "cluster.schema.json",
    "policies": "datalocalitypolicy.schema.json",
}


def _validator(folder: str) -> Draft202012Validator:
    return Draft202012Validator(definition_schemas()[SCHEMA_FILES[folder]])


def _errors(folder: str, document: dict[str, Any]) -> list[str]:
    return [error.message for error in _validator(folder).iter_errors(document)]


def _example(relative: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))
    return document


# --- the committed JSON Schemas -----------------------------------------------------------------------------


def test_committed_schemas_are_fresh() -> None:
    for name, schema in definition_schemas().items():
        committed = ROOT / "schemas" / name
        assert committed.read_text(encoding="utf-8") == dumps(schema), (
            f"{committed} is stale: run `fleet schema --out schemas`"
        )


def test_one_schema_per_kind_named_after_it() -> None:
    schemas = definition_schemas()
    assert set(schemas) == set(SCHEMA_FILES.values())
    for folder, model in FOLDERS.items():
        schema = schemas[SCHEMA_FILES[folder]]
        assert schema["$schema"] == JSON_SCHEMA_DIALECT
        assert schema["$id"].endswith("/" + SCHEMA_FILES[folder])
        assert schema["title"] == model.__name__
        assert folder in schema["description"]
        Draft202012Validator.check_schema(schema)


def test_schemas_use_yaml_field_names_and_reject_unknown_fields() -> None:
    job = definition_schemas()["job.schema.json"]
    assert "minAvailableClients" in job["properties"]
    assert "min_available_clients" not in job["properties"]
    assert job["additionalProperties"] is False
    assert "proximalMu" in job["$defs"]["Training"]["properties"]


def test_schemas_carry_descriptions() -> None:
    job = definition_schemas()["job.schema.json"]
    assert "federated-learning job" in job["description"]
    assert job["$defs"]["ModelStorage"]["description"].startswith("Where the aggregator writes")
    assert "Kubernetes quantity" in job["$defs"]["Resources"]["properties"]["cpu"]["description"]


def test_field_docstrings_become_descriptions() -> None:
    job = definition_schemas()["job.schema.json"]
    assert job["properties"]["namespace"]["description"] == "The hub namespace the job's objects live in."
    assert "Route or Ingress" in job["$defs"]["Listener"]["properties"]["host"]["description"]
    assert (
        "proximal term" in structural_schema(Job)["properties"]["training"]["properties"]["proximalMu"]["description"]
    )


def test_dumps_is_byte_stable() -> None:
    first = {name: dumps(schema) for name, schema in definition_schemas().items()}
    second = {name: dumps(schema) for name, schema in definition_schemas().items()}
    assert first == second
    for text in first.values():
        assert text.endswith("}\n")
        assert '\n  "$defs"' in text or '\n  "$id"' in text  # two-space indent
        assert list(json.loads(text)) == sorted(json.loads(text))


@pytest.mark.parametrize("folder", sorted(SCHEMA_FILES))
def test_every_example_file_references_and_passes_its_schema(folder: str) -> None:
    files = sorted((ROOT / folder).glob("*.yaml"))
    assert files
    for path in files:
        first_line = path.read_text(encoding="utf-8").splitlines()[0]
        assert first_line == f"# yaml-language-server: $schema=../schemas/{SCHEMA_FILES[folder]}", path
        assert _errors(folder, yaml.safe_load(path.read_text(encoding="utf-8"))) == [], path


@pytest.mark.parametrize(
    ("folder", "example", "edit", "phrase"),
    [
        ("jobs", "jobs/mnist-digits.yaml", {"epochs": 3}, "Additional properties are not allowed"),
        ("jobs", "jobs/mnist-digits.yaml", {"framework": "tensorflow"}, "is not one of"),
        ("jobs", "jobs/mnist-digits.yaml", {"name": "MNIST_Digits"}, "does not match"),
        ("jobs", "jobs/mnist-digits.yaml", {"rounds": "5"}, "is not of type 'integer'"),
        ("jobs", "jobs/mnist-digits.yaml", {"resources": {"cpu": "4 Gi"}}, "is not valid under any"),
        ("jobs", "jobs/mnist-digits.yaml", {"listeners": []}, "should be non-empty"),
        ("clusters", "clusters/eu-west-hospital.yaml", {"capacity": None}, "is not of type 'object'"),
        ("clusters", "clusters/eu-west-hospital.yaml", {"labels": {"region": "eu west"}}, "does not match"),
        ("policies", "policies/digits-residency.yaml", {"rules": {"requireTls": "yes"}}, "is not of type"),
    ],
)
def test_editors_flag_bad_input(folder: str, example: str, edit: dict[str, Any], phrase: str) -> None:
    document = {**_example(example), **edit}
    errors = _errors(folder, document)
    assert any(phrase in message for message in errors), errors


def test_editors_flag_a_missing_required_field() -> None:
    document = _example("jobs/mnist-digits.yaml")
    del document["dataset"]
    assert _errors("jobs", document) == ["'dataset' is a required property"]


@pytest.mark.parametrize(
    "edit",
    [
        {
            "storage": {
                "s3": {"bucket": "fleet-models", "prefix": "mnist/", "region": "eu-west-1", "credentialsSecret": "s3"}
            }
        },
        {"listeners": [{"type": "Route", "port": 443, "host": "fl.example.org"}]},
        {"listeners": [{"name": "lb", "type": "LoadBalancer", "port": 9092}]},
        {"resources": {"cpu": 2, "memory": "512Mi", "gpu": 1}},
        {"resources": {"cpu": "0.5", "memory": "1.5Gi"}},
        {"resources": {"cpu": 1.5, "memory": "1e9"}},
        {"training": {"strategy": "fedprox", "proximalMu": 0.1, "fractionTrain": 0.5}},
        {"framework": "openfl", "tls": True, "waitTimeoutSeconds": 60, "kind": "Job"},
    ],
)
def test_editors_accept_what_the_loader_accepts(edit: dict[str, Any]) -> None:
    # An editor must never flag a file that `fleet render` accepts.
    document = {**_example("jobs/mnist-digits.yaml"), **edit}
    Job.model_validate(document)
    assert _errors("jobs", document) == []


# --- fleet schema -------------------------------------------------------------------------------------------


def test_cli_writes_the_schemas_and_checks_them(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    runner = CliRunner()

    written = runner.invoke(main, ["schema", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert sorted(p.name for p in out.iterdir()) == sorted(SCHEMA_FILES.values())
    for name, schema in definition_schemas().items():
        assert (out / name).read_bytes() == dumps(schema).encode("utf-8")

    fresh = runner.invoke(main, ["schema", "--out", str(out), "--check"])
    assert fresh.exit_code == 0, fresh.output

    again = runner.invoke(main, ["schema", "--out", str(out)])
    assert again.exit_code == 0
    assert "wrote" not in again.output  # unchanged files are left alone


def test_cli_check_fails_on_a_stale_or_missing_schema(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    runner = CliRunner()
    assert runner.invoke(main, ["schema", "--out", str(out)]).exit_code == 0
    stale = out / "job.schema.json"
    stale.write_text(stale.read_text(encoding="utf-8").replace("minAvailableClients", "minClients"))
    (out / "cluster.schema.json").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    result = runner.invoke(main, ["schema", "--out", str(out), "--check"])

    assert result.exit_code == 1
    assert "job.schema.json: stale or missing" in result.stderr
    assert "cluster.schema.json: stale or missing" in result.stderr
    assert "datalocalitypolicy.schema.json" not in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # --check writes nothing


def test_cli_leaves_no_temporary_files(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    (out).mkdir()
    (out / "job.schema.json").write_text("{}\n")
    assert CliRunner().invoke(main, ["schema", "--out", str(out)]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(SCHEMA_FILES.values())


# --- structural schemas -------------------------------------------------------------------------------------


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _nodes(node[key], f"{path}[]")


def _assert_structural(schema: dict[str, Any]) -> None:
    text = json.dumps(schema)
    for forbidden in (
        '"$ref"',
        '"$defs"',
        '"anyOf"',
        '"oneOf"',
        '"allOf"',
        '"not"',
        '"const"',
        '"prefixItems"',
    ):
        assert forbidden not in text, forbidden
    assert schema["type"] == "object"
    for path, node in _nodes(schema):
        free = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert "type" in node or free, path
        assert node.get("type") != "null", path
        if node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
            assert ("properties" in node) != ("additionalProperties" in node), path
        if "additionalProperties" in node:
            assert isinstance(node["additionalProperties"], dict), path
        if node.get("type") == "array":
            assert isinstance(node["items"], dict), path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, path  # OpenAPI v3.0: a boolean beside minimum/maximum
        if "default" in node:
            assert node["default"] is not None, path
            # OpenAPI v3.0 schemas are draft-4 schemas plus `nullable` and x- extensions.
            assert list(Draft4Validator(node).iter_errors(node["default"])) == [], path
        for name in node.get("required", []):
            assert name in node["properties"], path


@pytest.mark.parametrize("model", [Job, FederatedLearningStatus])
def test_models_convert_to_structural_schemas(model: type[BaseModel]) -> None:
    _assert_structural(structural_schema(model))


def test_federated_learning_spec_converts_to_a_structural_schema() -> None:
    from fleet import models

    spec_model = getattr(models, "FederatedLearningSpec", None)
    if spec_model is None:
        pytest.skip("FederatedLearningSpec is not in fleet.models yet")
    schema = structural_schema(spec_model)
    _assert_structural(schema)
    assert schema["properties"]["client"]["properties"]["placement"]["x-kubernetes-preserve-unknown-fields"]


def test_structural_schema_translates_each_shape() -> None:
    job = structural_schema(Job)
    props = job["properties"]
    cpu = props["resources"]["properties"]["cpu"]
    assert cpu["x-kubernetes-int-or-string"] is True
    assert "type" not in cpu
    assert cpu["pattern"].startswith("^")
    assert props["framework"] == {
        "enum": ["flower", "openfl"],
        "type": "string",
        "default": "flower",
        "description": "The federated-learning framework the aggregator and collaborators run.",
    }
    assert props["kind"]["enum"] == ["Job"]
    host = props["listeners"]["items"]["properties"]["host"]
    assert host["nullable"] is True
    assert host["type"] == "string"
    pvc = props["storage"]["properties"]["pvc"]
    assert pvc["nullable"] is True
    assert pvc["type"] == "object"
    assert pvc["required"] == ["name", "size", "path"]
    learning_rate = props["training"]["properties"]["learningRate"]
    assert learning_rate["minimum"] == 0
    assert learning_rate["exclusiveMinimum"] is True
    assert "name" in job["required"]
    assert "tls" not in job["required"]
    assert job["description"].startswith("One federated-learning job")
    datasets_map = structural_schema(FederatedLearningStatus)["properties"]["finalMetrics"]
    assert datasets_map == {"additionalProperties": {"type": "number"}, "type": "object"}


def test_structural_schema_accepts_what_the_model_writes() -> None:
    job = _example("jobs/mnist-digits.yaml")
    validator = Draft4Validator(structural_schema(Job))
    assert list(validator.iter_errors(job)) == []
    # Draft 4 does not know `nullable`; the API server accepts null there, this check leaves nulls out.
    dumped = Job.model_validate(job).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert list(validator.iter_errors(dumped)) == []
    status = FederatedLearningStatus().model_dump(mode="json", by_alias=True, exclude_none=True)
    assert list(Draft4Validator(structural_schema(FederatedLearningStatus)).iter_errors(status)) == []


def test_structural_schema_refuses_what_it_cannot_express() -> None:
    class Ambiguous(BaseModel):
        value: int | list[int]

    with pytest.raises(ValueError, match=r"Ambiguous\.value: a union of \['array', 'integer'\]"):
        structural_schema(Ambiguous)
