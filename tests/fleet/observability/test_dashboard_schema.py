"""The dashboard against Grafana's dashboard schema.

No dependency here ships Grafana's schema in a form a test can load (it is CUE in Grafana's repository,
``kinds/dashboard/dashboard_kind.cue``), so its constraints on what the dashboard uses are restated below as a
JSON Schema, from that file: the panel definition is closed (a field it does not declare is an error), a panel's
``type`` is a non-empty string and ``fieldConfig`` (``defaults`` and ``overrides``) and ``options`` are required,
grid positions are unsigned with ``0 < w <= 24`` and ``0 <= x < 24``, ``schemaVersion`` is a uint16,
``graphTooltip`` one of 0, 1, 2, a variable has a ``name`` and a ``type`` of Grafana's variable types, a data
source reference has only ``type`` and ``uid``, and value mappings are ``{"type": "value", "options": {<value>:
{text, color, icon, index}}}``. The dashboard must pass; dashboards breaking each rule must not.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from fleet.observability.dashboard import dashboard

_UINT32 = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
_DATASOURCE_REF = {
    "type": "object",
    "properties": {"type": {"type": "string"}, "uid": {"type": "string"}},
    "additionalProperties": False,
}
_MAPPING_RESULT = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "color": {"type": "string"},
        "icon": {"type": "string"},
        "index": {"type": "integer"},
    },
    "additionalProperties": False,
}
_VALUE_MAP = {
    "type": "object",
    "required": ["type", "options"],
    "properties": {
        "type": {"const": "value"},
        "options": {"type": "object", "additionalProperties": _MAPPING_RESULT},
    },
    "additionalProperties": False,
}
_FIELD_CONFIG = {
    "type": "object",
    "properties": {
        **{
            key: {"type": "string"}
            for key in ("displayName", "displayNameFromDS", "description", "path", "unit", "noValue")
        },
        **{key: {"type": "boolean"} for key in ("writeable", "filterable")},
        **{key: {"type": "number"} for key in ("decimals", "min", "max")},
        "mappings": {"type": "array", "items": _VALUE_MAP},
        "thresholds": {"type": "object"},
        "color": {"type": "object", "required": ["mode"]},
        "links": {"type": "array"},
        "custom": {"type": "object"},
    },
    "additionalProperties": False,
}
_GRID_POS = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {**_UINT32, "exclusiveMinimum": 0},
        "w": {**_UINT32, "exclusiveMinimum": 0, "maximum": 24},
        "x": {**_UINT32, "exclusiveMaximum": 24},
        "y": _UINT32,
        "static": {"type": "boolean"},
    },
    "additionalProperties": False,
}
_PANEL = {
    "type": "object",
    "required": ["type", "fieldConfig", "options"],
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "id": _UINT32,
        "pluginVersion": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "targets": {"type": "array", "items": {"type": "object"}},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "transparent": {"type": "boolean"},
        "datasource": _DATASOURCE_REF,
        "gridPos": _GRID_POS,
        "links": {"type": "array"},
        "repeat": {"type": "string"},
        "repeatDirection": {"enum": ["h", "v"]},
        "repeatPanelId": {"type": "integer"},
        "maxDataPoints": {"type": "number"},
        "thresholds": {"type": "array"},
        "timeRegions": {"type": "array"},
        "transformations": {"type": "array", "items": {"type": "object", "required": ["id", "options"]}},
        "interval": {"type": "string"},
        "timeFrom": {"type": "string"},
        "timeShift": {"type": "string"},
        "libraryPanel": {"type": "object", "required": ["name", "uid"]},
        "options": {"type": "object"},
        "fieldConfig": {
            "type": "object",
            "required": ["defaults", "overrides"],
            "properties": {
                "defaults": _FIELD_CONFIG,
                "overrides": {
                    "type": "array",
                    "items": {"type": "object", "required": ["matcher", "properties"]},
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_VARIABLE = {
    "type": "object",
    "required": ["type", "name"],
    "properties": {
        "type": {"enum": ["query", "adhoc", "constant", "datasource", "interval", "textbox", "custom", "system"]},
        "name": {"type": "string"},
        "label": {"type": "string"},
        "hide": {"enum": [0, 1, 2]},
        "skipUrlSync": {"type": "boolean"},
        "global": {"type": "boolean"},
        "description": {"type": "string"},
        "query": {"type": ["string", "object"]},
        "datasource": _DATASOURCE_REF,
    },
}
DASHBOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schemaVersion"],
    "properties": {
        "id": {"type": "integer"},
        "uid": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "style": {"enum": ["light", "dark"]},
        "timezone": {"type": "string"},
        "editable": {"type": "boolean"},
        "graphTooltip": {"enum": [0, 1, 2]},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "refresh": {"anyOf": [{"type": "string"}, {"const": False}]},
        "schemaVersion": {"type": "integer", "minimum": 0, "maximum": 65535},
        "version": _UINT32,
        "panels": {"type": "array", "items": _PANEL},
        "templating": {"type": "object", "properties": {"list": {"type": "array", "items": _VARIABLE}}},
        "annotations": {"type": "object", "properties": {"list": {"type": "array", "items": {"type": "object"}}}},
        "links": {"type": "array", "items": {"type": "object"}},
    },
}


def _errors(model: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(DASHBOARD_SCHEMA)
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(model)]


def test_the_dashboard_is_valid_against_grafanas_schema() -> None:
    Draft202012Validator.check_schema(DASHBOARD_SCHEMA)
    assert _errors(dashboard()) == []


def _panel(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda model: change(model["panels"][0])


@pytest.mark.parametrize(
    "break_it",
    [
        _panel(lambda p: p["gridPos"].update(w=25)),
        _panel(lambda p: p["gridPos"].update(x=24)),
        _panel(lambda p: p["gridPos"].update(h=0)),
        _panel(lambda p: p.update(type="")),
        _panel(lambda p: p.update(legend={"show": True})),  # a field the panel definition does not declare
        _panel(lambda p: p.pop("fieldConfig")),
        _panel(lambda p: p["fieldConfig"].pop("overrides")),
        _panel(lambda p: p["fieldConfig"]["defaults"].update(mappings=[{"type": "value", "options": {"0": "ok"}}])),
        _panel(lambda p: p["datasource"].update(name="prometheus")),
        lambda m: m["templating"]["list"][1].update(type="select"),
        lambda m: m["templating"]["list"][1].pop("name"),
        lambda m: m.update(schemaVersion=70_000),
        lambda m: m.update(graphTooltip=3),
    ],
)
def test_a_dashboard_breaking_a_rule_of_the_schema_is_refused(break_it: Callable[[dict[str, Any]], None]) -> None:
    model = copy.deepcopy(dashboard())
    break_it(model)
    assert _errors(model)
