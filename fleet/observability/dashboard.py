"""The Grafana dashboard of federated training, as RHACM's Grafana loads custom dashboards.

RHACM's Grafana reads a custom dashboard from a ConfigMap in ``open-cluster-management-observability``
labelled ``grafana-custom-dashboard: "true"`` (the folder from its
``observability.open-cluster-management.io/dashboard-folder`` annotation); the renderer writes that ConfigMap
(`render.charts.observability`). Panels: training progress per job, accuracy and loss curves, participants,
the collaborators and what each sent, round durations, failed jobs, and the collaborator add-on's health as
OCM reports it (ManagedClusterAddOn conditions, which RHACM exports as
``acm_managed_cluster_addon_status_condition``).

The JSON model follows Grafana's dashboard schema (schemaVersion 39): a ``datasource`` variable for RHACM's
Observatorium data source, ``namespace`` and ``job`` variables, and panels on a 24-column grid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fleet.hub import ADDON_NAME

UID = "fleet-federated-learning"
TITLE = "Fleet: federated training"
FOLDER = "Fleet"
SCHEMA_VERSION = 39
ACM_METRICS = ("acm_managed_cluster_addon_status_condition",)
"""Metrics of RHACM itself that the dashboard reads (not exported by fleet)."""

_SELECTOR = 'namespace=~"$namespace", job=~"$job"'
ADDON_AVAILABLE = (
    "max by (managed_cluster_name) (acm_managed_cluster_addon_status_condition"
    f'{{addon_name="{ADDON_NAME}", condition="Available", status="true"}})'
)
"""1 while a cluster's collaborator add-on is Available, 0 while the condition is False or Unknown (RHACM's
state metrics export one series per condition status, 1 on the one that holds)."""
_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str
    """Grafana's panel type: timeseries, stat, bargauge, state-timeline, table."""
    targets: tuple[Target, ...]
    description: str
    unit: str = "short"
    width: int = 12
    height: int = 8
    mappings: tuple[dict[str, Any], ...] = ()


def _by_job(metric: str) -> str:
    return f"max by (namespace, job) ({metric}{{{_SELECTOR}}})"


PANELS: tuple[Panel, ...] = (
    Panel(
        "Jobs by phase",
        "stat",
        (Target("sum by (phase) (fleet_jobs)", "{{phase}}"),),
        "FederatedLearning jobs in each phase, as the controller reports them.",
        width=8,
        height=5,
    ),
    Panel(
        "Failed jobs",
        "stat",
        (Target(f'max by (namespace, job) (fleet_job_phase{{{_SELECTOR}, phase="Failed"}})', "{{namespace}}/{{job}}"),),
        "1 for a job whose phase is Failed; `fleet status --hub` says why.",
        width=8,
        height=5,
        mappings=(
            {
                "type": "value",
                "options": {"0": {"text": "ok", "color": "green"}, "1": {"text": "FAILED", "color": "red"}},
            },
        ),
    ),
    Panel(
        "Training progress",
        "bargauge",
        (
            Target(
                f"{_by_job('fleet_aggregator_round')} / {_by_job('fleet_aggregator_planned_rounds')}",
                "{{namespace}}/{{job}}",
            ),
        ),
        "Rounds aggregated out of the rounds the job runs.",
        unit="percentunit",
        width=8,
        height=5,
    ),
    Panel(
        "Accuracy",
        "timeseries",
        (Target(_by_job("fleet_aggregator_accuracy_ratio"), "{{namespace}}/{{job}}"),),
        "Accuracy of the global model after each round (held-out split, or the participants' evaluation).",
        unit="percentunit",
    ),
    Panel(
        "Loss",
        "timeseries",
        (
            Target(_by_job("fleet_aggregator_train_loss"), "{{namespace}}/{{job}} training"),
            Target(_by_job("fleet_aggregator_eval_loss"), "{{namespace}}/{{job}} evaluation"),
        ),
        "Training loss (averaged over the participants' examples) and evaluation loss, per round.",
    ),
    Panel(
        "Participants per round",
        "timeseries",
        (
            Target(_by_job("fleet_aggregator_round_participants"), "{{namespace}}/{{job}} participants"),
            Target(_by_job("fleet_aggregator_min_available_clients"), "{{namespace}}/{{job}} minAvailableClients"),
        ),
        "Collaborators whose update the last round aggregated, against the minimum a round needs.",
    ),
    Panel(
        "Participating clusters",
        "table",
        (
            Target(
                f"max by (namespace, job, collaborator) (fleet_aggregator_participations_total{{{_SELECTOR}}})",
                "{{collaborator}}",
            ),
        ),
        "Rounds that aggregated each cluster's update.",
    ),
    Panel(
        "Collaborators (as the hub sees them)",
        "state-timeline",
        (
            Target(
                f"max by (namespace, job, collaborator) (fleet_collaborator_up{{{_SELECTOR}}})",
                "{{job}} {{collaborator}}",
            ),
            Target(_by_job("fleet_connected_collaborators"), "{{namespace}}/{{job}} connected"),
        ),
        "1 while a cluster's collaborator is up for the job (its ManifestWork reports an available SuperNode).",
        mappings=(
            {
                "type": "value",
                "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}},
            },
        ),
    ),
    Panel(
        "Round duration",
        "timeseries",
        (
            Target(
                "histogram_quantile(0.9, sum by (le, namespace, job) "
                f"(fleet_aggregator_round_duration_seconds_bucket{{{_SELECTOR}}}))",
                "{{namespace}}/{{job}} p90",
            ),
            Target(
                f"sum by (namespace, job) (fleet_aggregator_round_duration_seconds_sum{{{_SELECTOR}}})"
                f" / sum by (namespace, job) (fleet_aggregator_round_duration_seconds_count{{{_SELECTOR}}})",
                "{{namespace}}/{{job}} mean",
            ),
        ),
        "Seconds per round as the ServerApp measured them, over the run so far.",
        unit="s",
    ),
    Panel(
        "Model updates received",
        "timeseries",
        (
            Target(
                "sum by (namespace, job, collaborator) "
                f"(rate(fleet_aggregator_received_bytes_total{{{_SELECTOR}}}[$__rate_interval]))",
                "{{job}} {{collaborator}}",
            ),
        ),
        "Bytes per second of model updates the aggregator received from each cluster.",
        unit="Bps",
    ),
    Panel(
        "Collaborator add-on health",
        "state-timeline",
        (Target(ADDON_AVAILABLE, "{{managed_cluster_name}}"),),
        "Each cluster's fleet-collaborator ManagedClusterAddOn: Available as OCM's add-on manager sets it from the "
        "agent Deployment's readiness (the agent is ready while the cluster's hub-signed registration is usable: "
        "without it no job's collaborator there can sign in). RHACM exports the condition; False and Unknown "
        "show as unavailable.",
        width=24,
        mappings=(
            {
                "type": "value",
                "options": {
                    "0": {"text": "unavailable", "color": "red"},
                    "1": {"text": "available", "color": "green"},
                },
            },
        ),
    ),
)


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    x = y = row_height = 0
    for number, panel in enumerate(PANELS, 1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel(number, panel, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": UID,
        "title": TITLE,
        "description": "Federated-learning jobs of the fleet: progress, model quality, collaborators, rounds.",
        "tags": ["fleet", "federated-learning"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def _panel(number: int, panel: Panel, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.mappings:
        defaults["mappings"] = list(panel.mappings)
    return {
        "id": number,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(_DATASOURCE),
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": dict(_DATASOURCE),
                "expr": target.expr,
                "legendFormat": target.legend,
            }
            for index, target in enumerate(panel.targets)
        ],
    }


def _variables() -> list[dict[str, Any]]:
    def query(name: str, label: str, definition: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": dict(_DATASOURCE),
            "definition": definition,
            "query": {"query": definition, "refId": f"{name}-variable"},
            "refresh": 2,
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "current": {"text": "All", "value": "$__all"},
            "sort": 1,
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Observatorium", "value": "Observatorium"},
        },
        query("namespace", "Namespace", "label_values(fleet_job_phase, namespace)"),
        query("job", "Job", 'label_values(fleet_job_phase{namespace=~"$namespace"}, job)'),
    ]


def dashboard_json() -> str:
    """The dashboard as JSON text: byte-identical on every run."""
    return json.dumps(dashboard(), indent=2) + "\n"


def queries(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [target["expr"] for panel in model["panels"] for target in panel.get("targets", [])]


def variable_queries(model: dict[str, Any]) -> list[str]:
    """The ``label_values(...)`` definitions of the dashboard's query variables."""
    return [v["definition"] for v in model["templating"]["list"] if v["type"] == "query"]


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+), (?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")


def parse_label_values(definition: str) -> tuple[str, str]:
    """``label_values(<selector>, <label>)`` -> (selector, label), as Grafana's Prometheus data source reads it."""
    match = _LABEL_VALUES.match(definition)
    if match is None:
        raise ValueError(f"expected label_values(<selector>, <label>), got {definition!r}")
    return match["selector"], match["label"]
