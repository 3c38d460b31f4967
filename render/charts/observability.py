"""The ``observability`` target: what RHACM's observability needs to show and alert on federated training.

A target of its own (``manifests/observability/``), since it writes into RHACM's namespace rather than the
hub's own folders, and a hub without RHACM observability has no use for it: apply it once observability is
enabled (``kubectl apply -R -f manifests/observability/``).

- ``rhacm/``, in ``open-cluster-management-observability``: the ``observability-metrics-custom-allowlist``
  ConfigMap (the metrics RHACM forwards to the hub's Thanos), the Grafana dashboard ConfigMap (labelled
  ``grafana-custom-dashboard: "true"``) and ``thanos-ruler-custom-rules`` (the alerts, evaluated by RHACM's
  Thanos Ruler over every cluster's metrics; RHACM reads one such ConfigMap, so a hub that has its own merges
  ``custom_rules.yaml`` into it);
- ``controller/``: a Service for the controller's ``/metrics`` port and the ServiceMonitor that scrapes it;
- ``namespaces/<namespace>/``: a ServiceMonitor per job namespace for the aggregators' metrics, served by the
  progress sidecar of each job's SuperLink pod behind the SuperLink Service the controller creates there (port
  ``progress``, path ``/metrics``; the Service's ``fleet.dev/job`` label becomes the series' ``job``).

The scrape path is RHACM's for user workloads: OpenShift's user workload monitoring scrapes what the
ServiceMonitors of user namespaces select, and RHACM's metrics collector forwards the series the allowlist names
under ``uwl_metrics_list.yaml``. Both monitors honour the exporters' labels: the controller's series carry each
job's ``namespace`` and ``job``, which must not become the controller's own.
"""

from __future__ import annotations

from typing import Any

from fleet.hub import AGGREGATOR_SERVICE_COMPONENT, CONTROLLER_NAME, CONTROLLER_NAMESPACE, INSTANCE_LABEL, JOB_LABEL
from fleet.observability.allowlist import allowlist_data
from fleet.observability.dashboard import FOLDER, UID, dashboard_json
from fleet.observability.rules import rule_file_yaml
from fleet.repository import Repository
from render.charts.base import FleetApp, FolderChart
from render.charts.controller import METRICS_PORT
from render.constructs.config_map import ConfigMap
from render.constructs.service import Service
from render.constructs.service_monitor import ServiceMonitor

SOURCE = "render/charts/observability.py"
OBSERVABILITY_NAMESPACE = "open-cluster-management-observability"
ALLOWLIST = "observability-metrics-custom-allowlist"
CUSTOM_RULES = "thanos-ruler-custom-rules"
CUSTOM_RULES_KEY = "custom_rules.yaml"
DASHBOARD_LABEL = "grafana-custom-dashboard"
DASHBOARD_FOLDER_ANNOTATION = "observability.open-cluster-management.io/dashboard-folder"
CONTROLLER_METRICS_SERVICE = f"{CONTROLLER_NAME}-metrics"
COMPONENT = "observability"
AGGREGATORS_MONITOR = "fleet-aggregators"
COMPONENT_LABEL = "app.kubernetes.io/component"
AGGREGATOR_SERVICE_LABELS = {
    COMPONENT_LABEL: AGGREGATOR_SERVICE_COMPONENT,
    "app.kubernetes.io/managed-by": CONTROLLER_NAME,
}
"""Labels of each job's in-hub aggregator Service (Flower's SuperLink, OpenFL's aggregator), which the controller
creates (`fleet.controller.objects.aggregator_service`; a test checks the monitor selects it), and not of its
listeners' Services."""
SCRAPE_INTERVAL = "30s"
"""Often enough for per-round curves of rounds that take minutes; RHACM's collector forwards every 5 minutes."""


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
    ServiceMonitor(
        controller,
        name=CONTROLLER_NAME,
        namespace=CONTROLLER_NAMESPACE,
        selector={INSTANCE_LABEL: CONTROLLER_METRICS_SERVICE, COMPONENT_LABEL: COMPONENT},
        endpoints=[_endpoint("metrics")],
        component=COMPONENT,
        source=SOURCE,
    )
    jobs_by_namespace: dict[str, list[str]] = {}
    for job in repository.jobs.values():
        jobs_by_namespace.setdefault(job.namespace, []).append(repository.source(job).file)
    for namespace, files in sorted(jobs_by_namespace.items()):
        ServiceMonitor(
            FolderChart(app, f"namespaces/{namespace}"),
            name=AGGREGATORS_MONITOR,
            namespace=namespace,
            selector=AGGREGATOR_SERVICE_LABELS,
            endpoints=[_endpoint("progress")],
            job_label=JOB_LABEL,
            component=COMPONENT,
            source=",".join([SOURCE, *sorted(files)]),
        )


def _endpoint(port: str) -> dict[str, Any]:
    return {"port": port, "path": "/metrics", "interval": SCRAPE_INTERVAL, "honorLabels": True}
