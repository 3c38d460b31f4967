"""Which metrics RHACM's metrics collectors forward to the hub's Thanos.

RHACM's collectors forward only listed metrics: the ``observability-metrics-custom-allowlist`` ConfigMap in
``open-cluster-management-observability`` lists them, user-workload metrics (fleet's own: the controller and
each job's aggregator run in user namespaces, scraped by OpenShift's user workload monitoring) under
``uwl_metrics_list.yaml`` and platform metrics (RHACM's own add-on health) under ``metrics_list.yaml``, each
``names:`` by series name. The names here come from the exporters themselves, so a new metric is allowlisted
when it is added.
"""

from __future__ import annotations

from typing import Any

import yaml

from fleet.observability.aggregator import METRICS
from fleet.observability.dashboard import ACM_METRICS


def _sample_names(kind: str, name: str) -> tuple[str, ...]:
    if kind == "counter":
        return (f"{name}_total",)
    if kind == "histogram":
        return (f"{name}_bucket", f"{name}_sum", f"{name}_count")
    return (name,)


def controller_metric_names() -> tuple[str, ...]:
    from fleet.controller.metrics import Metrics  # its registry holds every family, labelled or not

    return tuple(
        sample for family in Metrics().registry.collect() for sample in _sample_names(family.type, family.name)
    )


def user_workload_names() -> list[str]:
    """fleet's series: the aggregator's and the controller's."""
    names = {sample for info in METRICS for sample in info.sample_names()}
    names.update(controller_metric_names())
    return sorted(names)


def platform_names() -> list[str]:
    return sorted(ACM_METRICS)


def allowlist_data() -> dict[str, str]:
    """The ConfigMap's data: its two keys, each a YAML document."""

    def document(names: list[str]) -> str:
        body: dict[str, Any] = {"names": names}
        return yaml.safe_dump(body, sort_keys=False, width=10_000)

    return {"metrics_list.yaml": document(platform_names()), "uwl_metrics_list.yaml": document(user_workload_names())}
