"""RHACM forwards only allowlisted series: every series the dashboard and the alerts read is in the rendered
allowlist, fleet's under ``uwl_metrics_list.yaml`` and RHACM's own under ``metrics_list.yaml``."""

from __future__ import annotations

import re

import yaml

from fleet.observability.allowlist import allowlist_data
from fleet.observability.dashboard import dashboard, parse_label_values, queries, variable_queries
from fleet.observability.rules import ALERTS

_SERIES = re.compile(r"\b((?:fleet|acm)_[a-z0-9_]+)\b")


def _read() -> list[str]:
    model = dashboard()
    expressions = [*queries(model), *(parse_label_values(v)[0] for v in variable_queries(model))]
    return [*expressions, *(alert.expr for alert in ALERTS)]


def test_every_series_read_is_forwarded_by_rhacm() -> None:
    data = allowlist_data()
    user = set(yaml.safe_load(data["uwl_metrics_list.yaml"])["names"])
    platform = set(yaml.safe_load(data["metrics_list.yaml"])["names"])
    read = {name for expr in _read() for name in _SERIES.findall(expr)}
    assert read  # the pattern finds the names
    assert {n for n in read if n.startswith("fleet_")} <= user
    assert {n for n in read if n.startswith("acm_")} <= platform
    assert not user & platform
