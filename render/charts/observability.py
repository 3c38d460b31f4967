"""The ``observability`` target: what RHACM's observability needs to show and alert on federated training.

A target of its own (``manifests/observability/``), since it writes into RHACM's namespace rather than the
hub's own folders, and a hub without RHACM observability has no use for it: apply it once observability is
enabled (``kubectl apply -R -f manifests/observability/``).

- ``rhacm/``, in ``open-cluster-management-observability``: the ``observability-metrics-custom-allowlist``
  ConfigMap (the metrics RHACM forwards to the hub's Thanos), the Grafana dashboard ConfigMap (labelled
  ``grafana-custom-dashboard: "true"``) and ``thanos-ruler-custom-rules`` (the alerts, evaluated by RHACM's
  Thanos Ruler over every cluster's metrics; RHACM reads one such ConfigMap, so a hub that has its own merges
  ``custom_rules.yaml`` into it);
- ``controller/``: a Service for the controller's ``/metrics`` port, the target a scrape selects.

The aggregator's metrics are served by the progress sidecar of each job's SuperLink pod, behind the job's
SuperLink Service that the controller creates (port ``progress``, path ``/metrics``).
"""

from __future__ import annotations

from fleet.hub import CONTROLLER_NAME, CONTROLLER_NAMESPACE
from fleet.observability.allowlist import allowlist_data
from fleet.observability.dashboard import FOLDER, UID, dashboard_json
from fleet.observability.rules import rule_file_yaml
from fleet.repository import Repository
from render.charts.base import FleetApp, FolderChart
from render.charts.controller import METRICS_PORT
from render.constructs.config_map import ConfigMap
from render.constructs.service import Service

SOURCE = "render/charts/observability.py"
OBSERVABILITY_NAMESPACE = "open-cluster-management-observability"
ALLOWLIST = "observability-metrics-custom-allowlist"
CUSTOM_RULES = "thanos-ruler-custom-rules"
CUSTOM_RULES_KEY = "custom_rules.yaml"
DASHBOARD_LABEL = "grafana-custom-dashboard"
DASHBOARD_FOLDER_ANNOTATION = "observability.open-cluster-management.io/dashboard-folder"
CONTROLLER_METRICS_SERVICE = f"{CONTROLLER_NAME}-metrics"
COMPONENT = "observability"


def build_observability(app: FleetApp, repository: Repository) -> None:
    rhacm = FolderChart(app, "rhacm")
    ConfigMap(
        rhacm,
        name=ALLOWLIST,
        namespace=OBSERVABILITY_NAMESPACE,
        data=allowlist_data(),
        component=COMPONENT,
        source=f"{SOURCE},fleet/observability/allowlist.py",
    )
    ConfigMap(
        rhacm,
        name=f"grafana-dashboard-{UID}",
        namespace=OBSERVABILITY_NAMESPACE,
        data={f"{UID}.json": dashboard_json()},
        component=COMPONENT,
        source=f"{SOURCE},fleet/observability/dashboard.py",
        labels={DASHBOARD_LABEL: "true"},
        annotations={DASHBOARD_FOLDER_ANNOTATION: FOLDER},
    )
    ConfigMap(
        rhacm,
        name=CUSTOM_RULES,
        namespace=OBSERVABILITY_NAMESPACE,
        data={CUSTOM_RULES_KEY: rule_file_yaml()},
        component=COMPONENT,
        source=f"{SOURCE},fleet/observability/rules.py",
    )
    controller = FolderChart(app, "controller")
    Service(
        controller,
        name=CONTROLLER_METRICS_SERVICE,
        namespace=CONTROLLER_NAMESPACE,
        # The controller Deployment's pod labels (render.charts.controller).
        selector={"app.kubernetes.io/name": CONTROLLER_NAME, "app.kubernetes.io/part-of": "fleet"},
        ports=[{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}],
        component=COMPONENT,
        source=SOURCE,
    )
