"""Strict validation of rendered Kubernetes manifests, offline.

Custom kinds are checked against the ``openAPIV3Schema`` of their CustomResourceDefinition: those in a folder
of upstream CRDs (``--crds``, ``$FLEET_CRDS_DIR`` or ``<repo>/../shared/crds``) and those among the documents
themselves (the project renders its own). Core kinds are checked against Kubernetes' own schemas as shipped by
the ``kubernetes-validate`` package. Strict means what the API server's strict field validation means: a field
the schema does not declare is an error, except under ``x-kubernetes-preserve-unknown-fields``.

Every schema is converted and compiled once per process and reused, because the renderer validates thousands
of objects after every render.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError
from kubernetes_validate import utils as kubernetes_validate
from referencing import Registry, Resource

from fleet.claims import API_GROUP
from fleet.errors import field_path
from fleet.models import label_key_problem
from fleet.yaml_nesting import first_too_deep

__all__ = [
    "CRDS_DIR_VARIABLE",
    "ManifestError",
    "ResourceError",
    "ResourceResult",
    "Status",
    "ValidationReport",
    "default_crds_dir",
    "load_manifests",
    "validate_documents",
]

CRDS_DIR_VARIABLE = "FLEET_CRDS_DIR"
"""Environment variable naming the folder of upstream CustomResourceDefinitions."""

_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_KUBECONFORM_TIMEOUT_S = 300


class Status(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    ERROR = "error"
    """The resource could not be checked as written: no apiVersion or kind, or an apiVersion not served."""
    SKIPPED = "skipped"
    """No schema for the kind anywhere: reported, never passed silently."""


@dataclass(frozen=True, order=True)
class ResourceError:
    path: str
    """JSON path in the document (``spec.predicates[0].requiredClusterSelector``), or ``""``."""
    message: str


@dataclass(frozen=True)
class ResourceResult:
    file: str
    api_version: str
    kind: str
    namespace: str
    name: str
    status: Status
    errors: tuple[ResourceError, ...] = ()
    reason: str = ""
    """Why the resource was skipped or could not be validated."""

    @property
    def identity(self) -> str:
        name = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind or '<no kind>'} {name or '<no name>'}"

    def lines(self) -> list[str]:
        """One line per error: ``<file>: <Kind> <namespace>/<name>: <json path>: <message>``."""
        where = f"{self.file}: {self.identity}"
        if self.status is Status.SKIPPED:
            return [f"{where}: skipped: {self.reason}"]
        lines = [f"{where}: {self.reason}"] if self.reason else []
        lines += [f"{where}: {e.path}: {e.message}" if e.path else f"{where}: {e.message}" for e in self.errors]
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "status": self.status.value,
            "reason": self.reason,
            "errors": [{"path": e.path, "message": e.message} for e in self.errors],
        }


@dataclass
class ValidationReport:
    resources: list[ResourceResult]
    notes: list[str] = field(default_factory=list)
    """Remarks about the run as a whole (for example whether kubeconform ran)."""

    def count(self, status: Status) -> int:
        return sum(1 for r in self.resources if r.status is status)

    @property
    def ok(self) -> bool:
        """No resource is invalid or errored (skipped ones are reported, and do not fail the run)."""
        return self.count(Status.INVALID) == 0 and self.count(Status.ERROR) == 0

    @property
    def files(self) -> int:
        return len({r.file for r in self.resources})

    def summary(self) -> str:
        resources, files = len(self.resources), self.files
        return (
            f"Summary: {resources} resource{'s' * (resources != 1)} found in {files} file{'s' * (files != 1)}"
            f" - Valid: {self.count(Status.VALID)}, Invalid: {self.count(Status.INVALID)},"
            f" Errors: {self.count(Status.ERROR)}, Skipped: {self.count(Status.SKIPPED)}"
        )

    def lines(self) -> list[str]:
        """Every error and every skipped resource, one per line, then the notes (`summary` comes apart)."""
        lines = [line for r in self.resources if r.status is not Status.VALID for line in r.lines()]
        return [*lines, *self.notes]

    def to_json(self) -> dict[str, Any]:
        return {
            "resources": [r.to_json() for r in self.resources],
            "notes": list(self.notes),
            "summary": {
                "resources": len(self.resources),
                "files": self.files,
                **{status.value: self.count(status) for status in Status},
            },
        }


class ManifestError(Exception):
    """Bad input to validation as a whole: a missing path, unparsable YAML, an absent CRD folder."""


# --- public entry points ------------------------------------------------------------------------------------


def default_crds_dir(repo_root: Path, option: Path | None = None) -> Path:
    """The CRD folder: ``option`` if given, else ``$FLEET_CRDS_DIR``, else ``<repo_root>/../shared/crds``."""
    if option is not None:
        return option
    from_env = os.environ.get(CRDS_DIR_VARIABLE)
    if from_env:
        return Path(from_env)
    return repo_root.resolve().parent / "shared" / "crds"


def load_manifests(paths: Iterable[Path | str]) -> list[tuple[str, dict[str, Any]]]:
    """Every document of every ``*.yaml``/``*.yml`` file under ``paths`` (files or folders, recursively).

    Raises `ManifestError` for a missing path, unparsable YAML, a duplicate key, or a document that is not a
    mapping. Empty documents are ignored.
    """
    documents: list[tuple[str, dict[str, Any]]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))
        elif path.is_file():
            files = [path]
        else:
            raise ManifestError(f"{path}: no such file or folder")
        for file in files:
            documents.extend((file.as_posix(), doc) for doc in _load_file(file))
    return documents


def validate_documents(
    documents: Iterable[tuple[str, dict[str, Any]]],
    crds_dir: Path | None,
    *,
    kubeconform: bool = True,
) -> ValidationReport:
    """Validate each ``(file, manifest)`` strictly, and with kubeconform too where it is on PATH.

    ``crds_dir`` is the folder of upstream CRDs (``None``: only CRDs among the documents are known). Raises
    `ManifestError` if a document needs that folder and it does not exist.
    """
    documents = list(documents)
    schemas = _Schemas(crds_dir, documents)
    report = ValidationReport([_validate_one(file, doc, schemas) for file, doc in documents])
    if kubeconform:
        report.notes.append(_run_kubeconform(report, documents, schemas))
    return report


# --- loading YAML -------------------------------------------------------------------------------------------


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml's where PyYAML has it), rejecting duplicate keys instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool):
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


MAX_MANIFEST_NESTING = 100
"""Levels of nesting a manifest may have: upstream CRDs nest at most 35 (Argo CD's ApplicationSet); Python's
stack and libyaml's own limit (1,000 in PyYAML 6.0.4) are far beyond."""


def _load_file(file: Path) -> list[dict[str, Any]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{file}: expected a readable UTF-8 YAML file: {error}") from error
    too_deep = first_too_deep(text, MAX_MANIFEST_NESTING)
    if too_deep is not None:
        raise ManifestError(f"{file}:{too_deep}: expected YAML nested at most {MAX_MANIFEST_NESTING} levels")
    try:
        loaded = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else str(file)
        reason = getattr(error, "problem", None) or str(error)
        raise ManifestError(f"{where}: expected valid YAML: {reason}") from error
    documents = []
    for index, doc in enumerate(loaded):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ManifestError(
                f"{file}: document {index + 1}: expected a Kubernetes object (a mapping), found {_json_type(doc)}"
            )
        documents.append(doc)
    return documents


# --- one resource -------------------------------------------------------------------------------------------


def _validate_one(file: str, document: Mapping[str, Any], schemas: _Schemas) -> ResourceResult:
    if not isinstance(document, Mapping):
        reason = f"expected a Kubernetes object (a mapping), found {_json_type(document)}"
        return ResourceResult(file, "", "", "", "", Status.ERROR, reason=reason)
    api_version, kind = document.get("apiVersion"), document.get("kind")
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    identity = (
        file,
        api_version if isinstance(api_version, str) else "",
        kind if isinstance(kind, str) else "",
        namespace if isinstance(namespace, str) else "",
        name if isinstance(name, str) else "",
    )
    missing = [key for key, value in (("apiVersion", api_version), ("kind", kind)) if not value]
    if missing or not isinstance(api_version, str) or not isinstance(kind, str):
        reason = (
            f"expected string fields apiVersion and kind, missing: {', '.join(missing)}"
            if missing
            else "expected apiVersion and kind to be strings"
        )
        return ResourceResult(*identity, status=Status.ERROR, reason=reason)

    found = schemas.lookup(api_version, kind)
    if isinstance(found, _Unserved):
        return ResourceResult(*identity, status=Status.ERROR, reason=found.reason)
    if found is None:
        return ResourceResult(*identity, status=Status.SKIPPED, reason=schemas.not_found(api_version, kind))
    errors = tuple(sorted(set(_resource_errors(document, kind, found, schemas))))
    return ResourceResult(*identity, status=Status.INVALID if errors else Status.VALID, errors=errors)


def _resource_errors(
    document: Mapping[str, Any], kind: str, found: _Compiled, schemas: _Schemas
) -> Iterator[ResourceError]:
    yield from found.errors(document)
    yield from _metadata_errors(document, kind)
    # Resources embedded in this one (a ManifestWork's manifests) are checked against their own schemas where
    # one is known: their CRD only says "some Kubernetes object".
    for path in found.embedded:
        for location, embedded in _expand(document, path):
            api_version, embedded_kind = embedded.get("apiVersion"), embedded.get("kind")
            if not isinstance(api_version, str) or not isinstance(embedded_kind, str):
                continue  # the parent's schema already requires both
            inner = schemas.lookup(api_version, embedded_kind)
            prefix = field_path(location)
            if isinstance(inner, _Unserved):
                yield ResourceError(prefix + ".apiVersion", inner.reason)
            elif inner is not None:
                for error in _resource_errors(embedded, embedded_kind, inner, schemas):
                    joined = prefix if not error.path else f"{prefix}{'' if error.path[0] == '[' else '.'}{error.path}"
                    yield ResourceError(joined, error.message)


def _expand(node: Any, path: tuple[str | None, ...]) -> Iterator[tuple[list[str | int], dict[str, Any]]]:
    """The objects at ``path`` in ``node``: a name is a field, None any item of a list or value of a map."""
    if not path:
        if isinstance(node, dict):
            yield [], node
        return
    head, rest = path[0], path[1:]
    children: Iterable[tuple[str | int, Any]]
    if head is None:
        children = enumerate(node) if isinstance(node, list) else node.items() if isinstance(node, dict) else ()
    else:
        children = [(head, node[head])] if isinstance(node, dict) and head in node else []
    for key, child in children:
        for location, found in _expand(child, rest):
            yield [key, *location], found


def _describe(error: SchemaError) -> Iterator[ResourceError]:
    """Turn a jsonschema error into errors that name the offending field itself and what was expected."""
    path = list(error.absolute_path)
    instance, schema = error.instance, error.schema if isinstance(error.schema, dict) else {}
    expected: Any = error.validator_value
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        declared = schema.get("properties", {})
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        allowed = f"expected one of: {', '.join(sorted(declared))}" if declared else "no fields are allowed here"
        for key in sorted(instance, key=str):
            if key not in declared and not any(p.search(str(key)) for p in patterns):
                yield ResourceError(field_path([*path, str(key)]), f"unknown field ({allowed})")
        return
    if error.validator == "required" and isinstance(instance, dict):
        for key in expected:
            if key not in instance:
                yield ResourceError(field_path([*path, key]), "required field is missing")
        return
    if error.validator == "type":
        message = f"expected {' or '.join(_as_list(expected))}, found {_json_type(instance)} {_short(instance)}"
    elif error.validator in ("enum", "const"):
        values = expected if error.validator == "enum" else [expected]
        message = f"expected one of {', '.join(_short(v) for v in values)}, found {_short(instance)}"
    elif error.validator in ("anyOf", "oneOf") and all(set(branch) == {"type"} for branch in expected):
        types = [t for branch in expected for t in _as_list(branch["type"])]
        message = f"expected {' or '.join(dict.fromkeys(types))}, found {_json_type(instance)} {_short(instance)}"
    elif error.validator == "pattern":
        message = f"expected a string matching {expected}, found {_short(instance)}"
    elif error.validator == "format":
        message = f"expected format {expected}, found {_short(instance)}"
    else:
        message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    yield ResourceError(field_path(path), message)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=str, sort_keys=True)
    except TypeError:  # keys of mixed types cannot be sorted
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- metadata -----------------------------------------------------------------------------------------------
# The API server checks names and label syntax in code, not in the OpenAPI schema; do the same here.

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_RBAC_KINDS = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})


def _metadata_errors(document: Mapping[str, Any], kind: str) -> Iterator[ResourceError]:
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping):
        if metadata is None and not kind.endswith("List"):
            yield ResourceError("metadata", "required field is missing")
        return
    name = metadata.get("name")
    if name is None:
        if not kind.endswith("List"):
            yield ResourceError("metadata.name", "required field is missing")
    elif isinstance(name, str) and (problem := _name_problem(kind, name)):
        yield ResourceError("metadata.name", problem)
    namespace = metadata.get("namespace")
    if isinstance(namespace, str) and not _is_dns_label(namespace):
        yield ResourceError("metadata.namespace", f"expected a DNS label (RFC 1123), found {_short(namespace)}")
    for field_name in ("labels", "annotations"):
        entries = metadata.get(field_name)
        if not isinstance(entries, Mapping):
            continue
        for key, value in entries.items():
            where = f"metadata.{field_name}[{_short(key)}]"
            if not isinstance(key, str) or not _is_qualified_name(key):
                yield ResourceError(where, "expected a qualified name ([prefix/]name, name of at most 63 characters)")
            if field_name == "labels" and isinstance(value, str) and not _is_label_value(value):
                yield ResourceError(where, f"expected a label value (at most 63 characters), found {_short(value)}")


def _name_problem(kind: str, name: str) -> str | None:
    if kind in _RBAC_KINDS:
        # RBAC names are path segments ("system:controller:x" is valid).
        bad = name in (".", "..") or "/" in name or "%" in name or not name
        return f"expected a path segment name (no '/', '%', '.' or '..'), found {_short(name)}" if bad else None
    if kind == "Namespace":
        ok = _is_dns_label(name)
        return None if ok else f"expected a DNS label (RFC 1123), found {_short(name)}"
    if kind == "Service":
        ok = len(name) <= 63 and _DNS_1035_LABEL.fullmatch(name) is not None
        return None if ok else f"expected a DNS label starting with a letter (RFC 1035), found {_short(name)}"
    ok = len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None
    return None if ok else f"expected a DNS subdomain (RFC 1123), found {_short(name)}"


def _is_dns_label(value: str) -> bool:
    return len(value) <= 63 and _DNS_LABEL.fullmatch(value) is not None


def _is_qualified_name(key: str) -> bool:
    return label_key_problem(key) is None  # the models' rule: one definition of a label key


def _is_label_value(value: str) -> bool:
    return len(value) <= 63 and _LABEL_VALUE.fullmatch(value) is not None


# --- formats ------------------------------------------------------------------------------------------------
# Only the formats the Kubernetes and upstream schemas use, with Kubernetes' meaning, and no others:
# jsonschema's own checkers depend on which optional packages happen to be installed, and some differ from
# Kubernetes (its "duration" is ISO 8601, Kubernetes' is Go's "10m").

_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or isinstance(value, bool) or -(2**31) <= value < 2**31


@_FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or isinstance(value, bool) or -(2**63) <= value < 2**63


@_FORMATS.checks("byte")
def _byte(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


@_FORMATS.checks("date-time")
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if _RFC3339.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@_FORMATS.checks("date")
def _date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def _list_map_keys(
    validator: Draft202012Validator, keys: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[SchemaError]:
    """``x-kubernetes-list-type: map``: no two items may share the same values of the map keys."""
    if not isinstance(instance, list):
        return
    seen: dict[str, int] = {}
    for index, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        identity = json.dumps([item.get(k) for k in keys], sort_keys=True, default=str)
        if identity in seen:
            yield SchemaError(
                f"duplicate entry: items {seen[identity]} and {index} have the same {', '.join(keys)}",
                path=[index],
            )
        else:
            seen[identity] = index


_Validator: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"x-kubernetes-list-map-keys": _list_map_keys}
)


# --- a fast acceptance check --------------------------------------------------------------------------------
# jsonschema spends ~40 µs per sub-schema it descends into (1 ms per Placement): too slow for thousands of
# objects per render. Each schema is therefore also compiled into plain Python closures that only answer
# "valid?". They cover exactly the keywords Kubernetes schemas use, with jsonschema's semantics; a schema with
# any other keyword gets no fast check. jsonschema stays the authority: it runs whenever the fast check does
# not accept a document, and produces every error message.

_Check = Callable[[Any], bool]
_ANNOTATIONS = frozenset(
    {"description", "default", "example", "examples", "title", "$schema", "$defs", "$comment", "deprecated",
     "readOnly", "writeOnly", "externalDocs"}
)  # fmt: skip
_ASSERTIONS = frozenset(
    {"$ref", "type", "enum", "const", "properties", "patternProperties", "additionalProperties", "required",
     "minProperties", "maxProperties", "items", "minItems", "maxItems", "uniqueItems",
     "x-kubernetes-list-map-keys", "pattern", "minLength", "maxLength", "format", "minimum", "maximum",
     "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "allOf", "not"}
)  # fmt: skip


class _UnsupportedError(Exception):
    """The schema uses a keyword the fast check does not implement."""


def _accept(value: Any) -> bool:
    return True


def _reject(value: Any) -> bool:
    return False


def _same(one: Any, two: Any) -> bool:
    """jsonschema's equality: booleans differ from numbers, 1 equals 1.0, containers compare deeply."""
    if isinstance(one, bool) or isinstance(two, bool):
        return type(one) is type(two) and one == two
    if isinstance(one, dict) and isinstance(two, dict):
        return one.keys() == two.keys() and all(_same(v, two[k]) for k, v in one.items())
    if isinstance(one, list) and isinstance(two, list):
        return len(one) == len(two) and all(_same(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, dict | list) or isinstance(two, dict | list):
        return False
    return bool(one == two)


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, int | float)
    raise _UnsupportedError(f"type {name}")


_PLAIN_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)
}  # fmt: skip


def _type_check(names: tuple[str, ...]) -> _Check:
    for name in names:
        _is_type(None, name)  # rejects unknown type names now, not per document
    if all(name in _PLAIN_TYPES for name in names):
        # isinstance needs no care about bool here: bool is only a subclass of int.
        types = tuple(_PLAIN_TYPES[name] for name in names)
        plain = types[0] if len(types) == 1 else types
        return lambda x: isinstance(x, plain)
    return lambda x: any(_is_type(x, n) for n in names)


def _combination(keyword: str, subs: tuple[_Check, ...]) -> _Check:
    if keyword == "anyOf":
        return lambda x: any(c(x) for c in subs)
    if keyword == "oneOf":
        return lambda x: sum(1 for c in subs if c(x)) == 1
    return lambda x: all(c(x) for c in subs)


def _both(first: _Check, second: _Check) -> _Check:
    return lambda x: first(x) and second(x)


class _FastCompiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, _Check] = {}

    def compile(self, schema: Any) -> _Check:
        if schema is True:
            return _accept
        if schema is False:
            return _reject
        if not isinstance(schema, Mapping):
            raise _UnsupportedError(repr(schema))
        unknown = {k for k in schema if k not in _ASSERTIONS and k not in _ANNOTATIONS and not k.startswith("x-")}
        if unknown:
            raise _UnsupportedError(", ".join(sorted(unknown)))
        checks: list[_Check] = []
        if "$ref" in schema:
            checks.append(self._ref(schema["$ref"]))
        if "type" in schema:
            checks.append(_type_check(tuple(_as_list(schema["type"]))))
        if "enum" in schema:
            values = list(schema["enum"])
            checks.append(lambda x: any(_same(x, v) for v in values))
        if "const" in schema:
            const = schema["const"]
            checks.append(lambda x: _same(x, const))
        if {"properties", "patternProperties", "additionalProperties", "required", "minProperties",
                "maxProperties"} & schema.keys():  # fmt: skip
            checks.append(self._object(schema))
        if {"items", "minItems", "maxItems", "uniqueItems", "x-kubernetes-list-map-keys"} & schema.keys():
            checks.append(self._array(schema))
        if {"pattern", "minLength", "maxLength", "format"} & schema.keys():
            checks.append(self._string(schema))
        if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} & schema.keys():
            checks.append(self._number(schema))
        for keyword in ("anyOf", "oneOf", "allOf"):
            if keyword in schema:
                checks.append(_combination(keyword, tuple(self.compile(sub) for sub in schema[keyword])))
        if "not" in schema:
            negated = self.compile(schema["not"])
            checks.append(lambda x: not negated(x))
        if not checks:
            return _accept
        combined = checks[-1]
        for first in reversed(checks[:-1]):
            combined = _both(first, combined)
        return combined

    def _ref(self, ref: str) -> _Check:
        if ref in self.refs:
            return self.refs[ref]
        base, _, name = ref.partition("#/$defs/")
        if not name or "/" in name or "~" in name or base not in ("", _core().uri):
            raise _UnsupportedError(f"$ref {ref}")
        target = (self.root.get("$defs") or {}).get(name) if not base else None
        target = target if target is not None else _core().definitions.get(name)
        if target is None:
            raise _UnsupportedError(f"$ref {ref}")
        # Late binding, so that recursive definitions (JSONSchemaProps) compile.
        cell: list[_Check] = []
        self.refs[ref] = lambda x: cell[0](x)
        cell.append(self.compile(target))
        return self.refs[ref]

    def _object(self, schema: Mapping[str, Any]) -> _Check:
        properties = {k: self.compile(v) for k, v in (schema.get("properties") or {}).items()}
        patterns = tuple((re.compile(p), self.compile(v)) for p, v in (schema.get("patternProperties") or {}).items())
        additional = schema.get("additionalProperties", True)
        extra: _Check | None = None if additional is True else self.compile(additional)
        required = tuple(schema.get("required") or ())
        low, high = schema.get("minProperties", 0), schema.get("maxProperties")

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            if len(x) < low or (high is not None and len(x) > high):
                return False
            for key in required:
                if key not in x:
                    return False
            for key, value in x.items():
                sub = properties.get(key)
                matched = sub is not None
                if sub is not None and not sub(value):
                    return False
                for pattern, pattern_check in patterns:
                    if pattern.search(key):
                        matched = True
                        if not pattern_check(value):
                            return False
                if not matched and extra is not None and not extra(value):
                    return False
            return True

        return check

    def _array(self, schema: Mapping[str, Any]) -> _Check:
        items = self.compile(schema["items"]) if "items" in schema else None
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        unique = schema.get("uniqueItems") is True
        map_keys = schema.get("x-kubernetes-list-map-keys")

        def check(x: Any) -> bool:
            if not isinstance(x, list):
                return True
            if len(x) < low or (high is not None and len(x) > high):
                return False
            if items is not None:
                for item in x:
                    if not items(item):
                        return False
            if unique and any(_same(a, b) for i, a in enumerate(x) for b in x[i + 1 :]):
                return False
            if map_keys:
                seen = set()
                for item in x:
                    if isinstance(item, dict):
                        identity = json.dumps([item.get(k) for k in map_keys], sort_keys=True, default=str)
                        if identity in seen:
                            return False
                        seen.add(identity)
            return True

        return check

    def _string(self, schema: Mapping[str, Any]) -> _Check:
        pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        form = schema.get("format")

        def check(x: Any) -> bool:
            if form is not None and not _FORMATS.conforms(x, form):
                return False
            if not isinstance(x, str):
                return True
            if len(x) < low or (high is not None and len(x) > high):
                return False
            return pattern is None or pattern.search(x) is not None

        return check

    def _number(self, schema: Mapping[str, Any]) -> _Check:
        low, high = schema.get("minimum"), schema.get("maximum")
        low_x, high_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")

        def check(x: Any) -> bool:
            if isinstance(x, bool) or not isinstance(x, int | float):
                return True
            return not (
                (low is not None and x < low)
                or (high is not None and x > high)
                or (low_x is not None and x <= low_x)
                or (high_x is not None and x >= high_x)
            )

        return check


def _fast_check(schema: Mapping[str, Any]) -> _Check | None:
    try:
        return _FastCompiler(schema).compile(schema)
    except (_UnsupportedError, re.error):
        return None


# --- schemas ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unserved:
    reason: str


@dataclass(frozen=True)
class _Version:
    crd_name: str
    served: bool
    schema: dict[str, Any] | None


@dataclass
class _CRDKind:
    source: str
    """The file the CRD came from."""
    crd_name: str
    versions: dict[str, _Version]


class _Schemas:
    """Where each (apiVersion, kind) gets its schema; validators are compiled once and memoised."""

    def __init__(self, crds_dir: Path | None, documents: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        self.crds_dir = crds_dir
        self.document_crds: dict[tuple[str, str], _CRDKind] = {}
        for file, doc in documents:
            if (
                isinstance(doc, Mapping)
                and doc.get("kind") == "CustomResourceDefinition"
                and str(doc.get("apiVersion", "")).startswith("apiextensions.k8s.io/")
            ):
                for key, crd_kind in _crd_kinds(file, doc).items():
                    self.document_crds.setdefault(key, crd_kind)
        self._validators: dict[tuple[str, str, str], _Compiled | _Unserved | None] = {}
        self.used_crd_schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
        """(group, version, kind) -> converted JSON schema of each custom kind validated (for kubeconform)."""

    def lookup(self, api_version: str, kind: str) -> _Compiled | _Unserved | None:
        group, _, version = api_version.rpartition("/")
        key = (group, version, kind)
        if key not in self._validators:
            self._validators[key] = self._find(group, version, kind)
        return self._validators[key]

    def _find(self, group: str, version: str, kind: str) -> _Compiled | _Unserved | None:
        if group in _core().groups:
            return _core().validator(group, version, kind)
        crd_kind = self.document_crds.get((group, kind))
        if crd_kind is None:
            crd_kind = self._folder(group).get(kind)
        if crd_kind is None and group == API_GROUP:
            crd_kind = _project_crd_kinds().get((group, kind))
        if crd_kind is None:
            return None
        served = crd_kind.versions.get(version)
        if served is None or not served.served or served.schema is None:
            versions = ", ".join(f"{group}/{v}" for v, s in sorted(crd_kind.versions.items()) if s.served)
            why = "has no schema for" if served is not None and served.served else "does not serve"
            return _Unserved(
                f"apiVersion {group}/{version}: CustomResourceDefinition {crd_kind.crd_name} "
                f"({crd_kind.source}) {why} {version}; served: {versions or 'none'}"
            )
        schema = _crd_schema(served.schema)
        self.used_crd_schemas[(group, version, kind)] = schema
        return _compiled(json.dumps(schema, sort_keys=True))

    def _folder(self, group: str) -> dict[str, _CRDKind]:
        if self.crds_dir is None:
            return {}
        if not self.crds_dir.is_dir():
            raise ManifestError(
                f"the folder of upstream CustomResourceDefinitions {self.crds_dir} does not exist; "
                f"point --crds or the {CRDS_DIR_VARIABLE} variable at it"
            )
        return _crd_group(self.crds_dir.resolve(), group)

    def not_found(self, api_version: str, kind: str) -> str:
        places = ["CustomResourceDefinitions among the documents"]
        if self.crds_dir is not None:
            places.append(f"under {self.crds_dir}")
        places.append(f"Kubernetes {_core().version} schemas")
        return f"no schema for {kind} {api_version} (looked in {', '.join(places)})"


@cache
def _project_crd_kinds() -> dict[tuple[str, str], _CRDKind]:
    """The project's own kinds, from the CRD the renderer writes: validated wherever they are, with or without
    that CRD among the documents."""
    from fleet.crd import federated_learning_crd, managed_cluster_labels_crd

    file = "fleet's own CustomResourceDefinitions (fleet/crd.py)"
    return {**_crd_kinds(file, federated_learning_crd()), **_crd_kinds(file, managed_cluster_labels_crd())}


def _crd_kinds(file: str, crd: Mapping[str, Any]) -> dict[tuple[str, str], _CRDKind]:
    spec = crd.get("spec")
    if not isinstance(spec, Mapping):
        return {}
    group, names = spec.get("group"), spec.get("names")
    if not isinstance(group, str) or not isinstance(names, Mapping) or not isinstance(names.get("kind"), str):
        return {}
    metadata = crd.get("metadata")
    crd_name = str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""
    versions: dict[str, _Version] = {}
    for entry in spec.get("versions") or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        schema = (
            (entry.get("schema") or {}).get("openAPIV3Schema") if isinstance(entry.get("schema"), Mapping) else None
        )
        versions[entry["name"]] = _Version(
            crd_name, bool(entry.get("served", False)), schema if isinstance(schema, dict) else None
        )
    return {(group, names["kind"]): _CRDKind(file, crd_name, versions)}


@cache
def _crd_files(folder: Path) -> tuple[tuple[Path, str], ...]:
    """The text of every ``*.yaml`` below ``folder``, read once per process."""
    files = []
    for file in sorted(folder.rglob("*.yaml")):
        try:
            files.append((file, file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as error:
            raise ManifestError(f"{file}: expected a readable UTF-8 CustomResourceDefinition: {error}") from error
    return tuple(files)


@cache
def _crd_group(folder: Path, group: str) -> dict[str, _CRDKind]:
    """The CRDs of ``group`` below ``folder``, by kind; parsed once per process.

    Only files that mention the group are parsed: the Argo CD CRDs alone take a second to parse.
    """
    kinds: dict[str, _CRDKind] = {}
    for file, text in _crd_files(folder):
        if group not in text:
            continue
        for doc in _crd_documents(file, text):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                for (crd_group, kind), crd_kind in _crd_kinds(file.as_posix(), doc).items():
                    if crd_group == group:
                        kinds.setdefault(kind, crd_kind)
    return kinds


# --- parsed CRDs, cached by content ------------------------------------------------------------------------
# PyYAML's constructor is Python even over libyaml's parser: the upstream CRDs (2.4 MB) take 0.6 s to parse,
# most of a small render. Each file's documents are kept as JSON, named by the sha256 of the file's text and
# of what parsed it, so an edited CRD (or another PyYAML) is a new name: an entry is never stale, only unused.

_CACHE_HOME_VARIABLE = "XDG_CACHE_HOME"
"""The parsed CRDs go to ``$XDG_CACHE_HOME/fleet/parsed-crds`` (default ``~/.cache/fleet/parsed-crds``)."""
_CACHE_FORMAT = "fleet-parsed-crd-1"


def _parsed_crds_dir() -> Path | None:
    base = os.environ.get(_CACHE_HOME_VARIABLE)
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home folder: no cache
            return None
    return Path(base) / "fleet" / "parsed-crds"


def _crd_documents(file: Path, text: str) -> list[Any]:
    """The YAML documents of the CRD file ``file`` holding ``text``: from the cache when it has this very text,
    else parsed strictly (duplicate keys refused) and kept there if JSON holds them exactly."""
    key = hashlib.sha256(f"{_CACHE_FORMAT}\0{yaml.__version__}\0{text}".encode()).hexdigest()
    folder = _parsed_crds_dir()
    entry = folder / f"{key}.json" if folder is not None else None
    if entry is not None:
        try:
            cached = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cached = None  # absent, unreadable or damaged: parse again (and write it anew)
        if isinstance(cached, list):
            return cached
    try:
        loaded = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as error:
        raise ManifestError(f"{file}: expected a valid YAML CustomResourceDefinition: {error}") from error
    if entry is not None and _is_plain_json(loaded):
        _write_quietly(entry, json.dumps(loaded, ensure_ascii=False, separators=(",", ":")))
    return loaded


def _is_plain_json(value: Any) -> bool:
    """Whether JSON gives back exactly ``value`` (no dates, binary, sets, non-string keys or NaN)."""
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_plain_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain_json(item) for key, item in value.items())
    return False


def _write_quietly(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a reader never sees half a file); a cache that cannot be written
    (read-only home, full disk) only costs the next run the parse."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError:
        return
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(name).replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            Path(name).unlink()


@dataclass(frozen=True)
class _Compiled:
    validator: Any
    """The jsonschema validator: the authority, and the source of every error message."""
    fast: _Check | None
    """Accepts valid documents quickly; None where the schema uses a keyword it does not implement."""
    embedded: tuple[tuple[str | None, ...], ...] = ()
    """Where embedded Kubernetes objects sit (``x-kubernetes-embedded-resource``); None: any item or value."""

    def errors(self, document: Mapping[str, Any]) -> Iterator[ResourceError]:
        if self.fast is not None:
            try:
                if self.fast(document):
                    return
            except Exception:  # odd input (a non-string key): let jsonschema decide
                pass
        try:
            for error in self.validator.iter_errors(document):
                yield from _describe(error)
        except TypeError as error:
            yield ResourceError("", f"expected JSON-compatible data (string keys): {error}")


def _compile(schema: dict[str, Any], registry: Registry | None = None) -> _Compiled:
    kwargs: dict[str, Any] = {"format_checker": _FORMATS}
    if registry is not None:
        kwargs["registry"] = registry
    return _Compiled(_Validator(schema, **kwargs), _fast_check(schema), tuple(_embedded_paths(schema)))


def _embedded_paths(schema: Mapping[str, Any], path: tuple[str | None, ...] = ()) -> Iterator[tuple[str | None, ...]]:
    if schema.get("x-kubernetes-embedded-resource") is True:
        yield path
        return  # deeper ones belong to the embedded object's own schema
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, Mapping):
            yield from _embedded_paths(sub, (*path, name))
    for keyword in ("items", "additionalProperties"):
        if isinstance(schema.get(keyword), Mapping):
            yield from _embedded_paths(schema[keyword], (*path, None))


@cache
def _compiled(schema_json: str) -> _Compiled:
    """One compiled validator per distinct converted schema, shared by every report in the process."""
    return _compile(json.loads(schema_json))


# --- CRD structural schema -> strict JSON Schema ------------------------------------------------------------

_DROPPED = frozenset(
    {"description", "default", "example", "title", "externalDocs", "x-kubernetes-validations",
     "x-kubernetes-map-type", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
     "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields", "nullable"}
)  # fmt: skip


def _crd_schema(openapi: Mapping[str, Any]) -> dict[str, Any]:
    """The strict JSON Schema (draft 2020-12) of a CRD version's ``openAPIV3Schema``, self-contained."""
    schema = _convert(openapi, spine=True)
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    # The API server validates a custom resource's metadata as ObjectMeta, whatever the CRD says.
    properties["metadata"] = {"$ref": f"#/$defs/{_META}"}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
    schema["type"] = "object"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$defs"] = _core().closure(_META)
    return schema


def _convert(node: Mapping[str, Any], *, spine: bool) -> dict[str, Any]:
    """Convert one OpenAPI v3 (structural) schema node.

    ``spine`` is false inside allOf/anyOf/oneOf/not, which only add value checks to fields declared on the
    spine: closing those objects would reject fields the spine allows.
    """
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {name: _convert(sub, spine=spine) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            out[key] = _convert(value, spine=spine and key != "not")
        elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
            out[key] = [_convert(sub, spine=False) for sub in value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
            # OpenAPI 3.0 (draft 4) flags: turn them into draft 2020-12 bounds.
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if value and bound in node:
                out[key] = node[bound]
        elif key in ("minimum", "maximum") and node.get(f"exclusive{key[:3].title()}{key[3:]}") is True:
            continue
        else:
            out[key] = value

    if node.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["type"] = ["integer", "string"]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if node.get("x-kubernetes-list-type") == "map" and node.get("x-kubernetes-list-map-keys"):
        out["x-kubernetes-list-map-keys"] = list(node["x-kubernetes-list-map-keys"])
    if node.get("x-kubernetes-embedded-resource"):
        properties = out.setdefault("properties", {})
        properties.setdefault("apiVersion", {"type": "string", "minLength": 1})
        properties.setdefault("kind", {"type": "string", "minLength": 1})
        properties["metadata"] = {"$ref": f"#/$defs/{_META}"}
        out["required"] = sorted({*out.get("required", []), "apiVersion", "kind"})
        out.setdefault("type", "object")
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [*_as_list(out["type"]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    is_object = out.get("type") == "object" or "properties" in out
    open_ = node.get("x-kubernetes-preserve-unknown-fields") is True
    if spine and is_object and not open_ and "additionalProperties" not in out:
        # Strict: a field the schema does not declare is an error (the API server would prune or reject it).
        out["additionalProperties"] = False
    return out


# --- Kubernetes' own schemas (kubernetes-validate) ----------------------------------------------------------


class _CoreSchemas:
    """The strict schemas of the newest Kubernetes version that kubernetes-validate ships, loaded once."""

    def __init__(self) -> None:
        self.version = kubernetes_validate.latest_version()
        document = kubernetes_validate.schema_contents(
            f"kubernetes-json-schema/v{self.version}-local-strict/_definitions.json", self.version
        )
        self.uri: str = document["$id"]
        self.definitions: dict[str, Any] = document["$defs"]
        self.registry: Registry = Resource.from_contents(document) @ Registry()
        self.kinds: dict[tuple[str, str], dict[str, str]] = {}
        """(group, kind) -> version -> definition name."""
        for name, definition in self.definitions.items():
            for gvk in definition.get("x-kubernetes-group-version-kind", []):
                if name.endswith(f".{gvk['kind']}"):
                    self.kinds.setdefault((gvk["group"], gvk["kind"]), {})[gvk["version"]] = name
        self.groups = frozenset(group for group, _ in self.kinds)
        self._validators: dict[str, _Compiled] = {}

    def validator(self, group: str, version: str, kind: str) -> _Compiled | _Unserved | None:
        versions = self.kinds.get((group, kind))
        if versions is None:
            return None
        definition = versions.get(version)
        if definition is None:
            prefix = f"{group}/" if group else ""
            served = ", ".join(f"{prefix}{v}" for v in sorted(versions))
            return _Unserved(
                f"apiVersion {prefix}{version}: Kubernetes {self.version} does not serve {kind} "
                f"in {version}; served: {served}"
            )
        if definition not in self._validators:
            api_version = f"{group}/{version}" if group else version
            schema = {
                "$ref": f"{self.uri}#/$defs/{definition}",
                "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind}},
                "required": ["apiVersion", "kind"],
            }
            self._validators[definition] = _compile(schema, self.registry)
        return self._validators[definition]

    def closure(self, name: str) -> dict[str, Any]:
        """The definition ``name`` and every definition it refers to, for a self-contained schema."""
        found: dict[str, Any] = {}
        pending = [name]
        while pending:
            current = pending.pop()
            if current in found:
                continue
            found[current] = self.definitions[current]
            pending.extend(re.findall(r'"#/\$defs/([^"]+)"', json.dumps(self.definitions[current])))
        return found


@cache
def _core() -> _CoreSchemas:
    return _CoreSchemas()


# --- kubeconform --------------------------------------------------------------------------------------------


def _run_kubeconform(report: ValidationReport, documents: list[tuple[str, dict[str, Any]]], schemas: _Schemas) -> str:
    """Run kubeconform over the documents, with the CRD schemas in its file layout, and merge its verdicts.

    Only the converted CRD schemas are offered, offline; core kinds are skipped by kubeconform (their schemas
    would be downloaded) and stay checked by kubernetes-validate above.
    """
    executable = shutil.which("kubeconform")
    if executable is None:
        return "kubeconform: not on PATH, not run (the built-in strict validation above applies)"
    with tempfile.TemporaryDirectory(prefix="fleet-kubeconform-") as tmp:
        root = Path(tmp)
        for (group, version, kind), schema in schemas.used_crd_schemas.items():
            target = root / "schemas" / group / f"{kind.lower()}_{version}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(schema, sort_keys=True), encoding="utf-8")
        # One file per document, so that kubeconform's file name identifies the resource exactly.
        (root / "docs").mkdir()
        for index, (_, doc) in enumerate(documents):
            (root / "docs" / f"{index:07d}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        location = (root / "schemas").as_posix() + "/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"
        command = [executable, "-strict", "-summary", "-output", "json", "-ignore-missing-schemas",
                   "-schema-location", location, (root / "docs").as_posix()]  # fmt: skip
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=_KUBECONFORM_TIMEOUT_S, check=False
            )
            output = json.loads(completed.stdout)
        except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as error:
            return f"kubeconform: failed to run ({error}); its verdicts are not merged"
    for entry in output.get("resources") or []:
        if entry.get("status") not in ("statusInvalid", "statusError"):
            continue
        stem = Path(str(entry.get("filename", ""))).stem
        if not stem.isdigit() or int(stem) >= len(report.resources):
            continue  # not one of the documents we wrote for it (kubeconform names them by index)
        index = int(stem)
        ours = report.resources[index]
        message = f"kubeconform: {entry.get('msg', '').strip()}"
        if ours.status is Status.VALID or message not in {e.message for e in ours.errors}:
            report.resources[index] = ResourceResult(
                ours.file, ours.api_version, ours.kind, ours.namespace, ours.name,
                Status.INVALID if ours.status is Status.VALID else ours.status,
                (*ours.errors, ResourceError("", message)), ours.reason,
            )  # fmt: skip
    summary = output.get("summary") or {}
    counts = ", ".join(f"{key.title()}: {summary.get(key, 0)}" for key in ("valid", "invalid", "errors", "skipped"))
    return f"kubeconform: {counts} (core kinds skipped by kubeconform: checked offline by kubernetes-validate)"
