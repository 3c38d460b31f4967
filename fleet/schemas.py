"""Schemas generated from the models: JSON Schemas for editors, OpenAPI structural schemas for CRDs.

The models in `fleet.models` are the one definition of every kind; nothing here restates a field. Editors
(yaml-language-server, through the ``# yaml-language-server: $schema=...`` line of each example file) read the
JSON Schemas under ``schemas/``; the renderer embeds the structural schemas in the project's CRD.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from fleet.repository import FOLDERS

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_URI = "https://fleet.dev/schemas/"
"""The ``$id`` of each schema is this followed by its file name."""


def _file_name(kind: str) -> str:
    """``Job`` -> ``job.schema.json``."""
    return f"{kind.lower()}.schema.json"


def definition_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12) of each kind people write, field names as in YAML."""
    schemas: dict[str, dict[str, Any]] = {}
    for folder, model in FOLDERS.items():
        kind = model.__name__
        file_name = _file_name(kind)
        schema = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)
        header = {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": SCHEMA_BASE_URI + file_name,
            "title": kind,
            "description": f"{schema.get('description', kind).strip()}\n\nOne document per file under {folder}/.",
        }
        schemas[file_name] = {**schema, **header}
    return schemas


def dumps(schema: dict[str, Any]) -> str:
    """The committed form of a schema: sorted keys, 2-space indent, trailing newline (byte-stable)."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class _Generator(GenerateJsonSchema):
    # Titles derived from field names ("Minavailableclients") tell an editor user nothing the key does not.
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


# --- OpenAPI v3 structural schemas for CRDs ---------------------------------------------------------------

# What apiextensions.k8s.io/v1 accepts in a node (JSONSchemaProps) that a pydantic schema may carry; anything
# else pydantic emits is either translated below or refused, never silently passed to the API server.
_KEPT = frozenset(
    {
        "type",
        "description",
        "default",
        "enum",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "multipleOf",
        "required",
        "nullable",
        "properties",
        "additionalProperties",
        "items",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    }
)
_DROPPED = frozenset({"title", "examples", "propertyNames"})
"""Documentation noise, and key constraints OpenAPI v3.0 cannot state (the models still enforce them)."""


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI v3 structural schema of ``model`` for a CustomResourceDefinition.

    Structural (Kubernetes' rules): no ``$ref`` (definitions are inlined), a ``type`` on every node except
    int-or-string and free-form ones, no ``anyOf``/``oneOf`` carrying types (``X | None`` becomes
    ``nullable: true``; ``int | str`` such as a Quantity becomes ``x-kubernetes-int-or-string: true`` keeping
    the string pattern), maps as ``additionalProperties`` with a typed value, ``properties`` never beside
    ``additionalProperties``, ``Any`` as ``x-kubernetes-preserve-unknown-fields: true``, no null defaults.
    Raises ValueError for a model holding a shape a structural schema cannot express.
    """
    schema = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return _structural(schema, definitions, model.__name__)


def _structural(node: dict[str, Any], definitions: dict[str, Any], where: str) -> dict[str, Any]:
    node = _resolve(node, definitions, where)
    if "anyOf" in node or "oneOf" in node:
        node = _union(node, definitions, where)
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
        del node["const"]
    if "patternProperties" in node:
        # A map with constrained keys: OpenAPI v3.0 keeps the value type and loses the key pattern.
        (value,) = node.pop("patternProperties").values()
        node["additionalProperties"] = value
    if node.get("additionalProperties") is False:
        # Unknown fields are pruned by the API server, and apiextensions forbids `false` beside `properties`.
        del node["additionalProperties"]
    if node.get("additionalProperties") in (True, {}) or (
        "type" not in node and not node.get("x-kubernetes-int-or-string")
    ):
        # dict[str, Any] or Any: free-form content, kept as written instead of pruned.
        node.pop("additionalProperties", None)
        node["x-kubernetes-preserve-unknown-fields"] = True
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node:  # JSON Schema's numeric form -> OpenAPI v3.0's boolean form
            node[bound.replace("exclusiveM", "m")] = node.pop(bound)
            node[bound] = True

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: _structural(child, definitions, f"{where}.{name}") for name, child in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, definitions, f"{where}[]")
        elif key == "default":
            if value is not None:  # a null default says nothing a missing field does not
                out[key] = copy.deepcopy(value)
        elif key in _KEPT:
            out[key] = value
        else:
            raise ValueError(f"{where}: {key!r} cannot be expressed in a structural schema")

    if "type" not in out and not (
        out.get("x-kubernetes-int-or-string") or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise ValueError(f"{where}: expected a type for every node of a structural schema, found {node!r}")
    if out.get("type") == "object" and not (
        "properties" in out or "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise ValueError(f"{where}: an object needs 'properties' or a typed 'additionalProperties'")
    if out.get("type") == "array" and "items" not in out:
        raise ValueError(f"{where}: an array needs typed 'items'")
    return out


def _resolve(node: dict[str, Any], definitions: dict[str, Any], where: str) -> dict[str, Any]:
    """Inline ``$ref`` (and the ``allOf: [{$ref}]`` form), keeping its siblings (default, description)."""
    node = dict(node)
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name not in definitions:
            raise ValueError(f"{where}: unknown reference {name!r}")
        node = {**definitions[name], **node}
    if "allOf" in node:
        raise ValueError(f"{where}: 'allOf' cannot be expressed in a structural schema")
    return node


def _union(node: dict[str, Any], definitions: dict[str, Any], where: str) -> dict[str, Any]:
    """``X | None`` -> X with ``nullable``; ``int | str`` -> int-or-string; anything else is refused."""
    node = dict(node)
    members = [_resolve(m, definitions, where) for m in node.pop("anyOf", None) or node.pop("oneOf")]
    nullable = any(m.get("type") == "null" for m in members)
    members = [m for m in members if m.get("type") != "null"]
    types = {m.get("type") for m in members}
    if len(members) == 1:
        merged = {**members[0], **node}
        if "anyOf" in merged or "oneOf" in merged:  # Quantity | None: the member is itself a union
            merged = _union(merged, definitions, where)
    elif types in ({"integer", "string"}, {"integer", "number", "string"}) and len(members) == len(types):
        # A Quantity: Kubernetes stores it as int-or-string; the renderer always writes the string form.
        text = next(m for m in members if m["type"] == "string")
        merged = {key: value for key, value in text.items() if key != "type"}
        merged.update(node)
        merged["x-kubernetes-int-or-string"] = True
    else:
        raise ValueError(f"{where}: a union of {sorted(map(str, types))} cannot be expressed structurally")
    if nullable:
        merged["nullable"] = True
    return merged
