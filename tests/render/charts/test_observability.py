"""The observability target's scrape path: each ServiceMonitor selects exactly the Service that serves the metrics
(the controller's, rendered beside it; each job's SuperLink Service, which the controller creates), on the port
that serves them, and keeps the exporters' labels."""

from __future__ import annotations

from typing import Any

from chart_helpers import Rendered, one

from fleet.controller.objects import JobRef, aggregator_name, federation_objects
from fleet.models import FederatedLearningSpec
from fleet.repository import Repository
from fleet.runtimes import runtime_for


def _synth(repository: Repository) -> Rendered:
    import render

    return {m.path: m.body for m in render.synth(repository, "observability")}


def _selects(monitor: dict[str, Any], service: dict[str, Any]) -> bool:
    """prometheus-operator's choice: a Service of the monitor's namespace (no namespaceSelector) carrying every
    label of its selector."""
    spec = monitor["spec"]
    assert "namespaceSelector" not in spec and set(spec["selector"]) == {"matchLabels"}
    labels = service["metadata"].get("labels", {})
    same_namespace = service["metadata"]["namespace"] == monitor["metadata"]["namespace"]
    return same_namespace and all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())


def _endpoints(monitor: dict[str, Any]) -> list[dict[str, Any]]:
    endpoints: list[dict[str, Any]] = monitor["spec"]["endpoints"]
    # The controller's series carry each job's namespace and job: the exporters' labels must win.
    assert all(e["honorLabels"] is True and e["path"] == "/metrics" for e in endpoints)
    return endpoints


def test_the_controller_monitor_scrapes_the_controllers_metrics_port(example: tuple[Repository, Rendered]) -> None:
    repository, hub = example
    rendered = _synth(repository)
    monitor = rendered["controller/servicemonitor-fleet-controller.yaml"]
    service = rendered["controller/service-fleet-controller-metrics.yaml"]
    assert [s for s in rendered.values() if s["kind"] == "Service" and _selects(monitor, s)] == [service]
    assert [e["port"] for e in _endpoints(monitor)] == ["metrics"]
    [port] = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
    # The Service reaches the controller's pods, on the container port that serves /metrics.
    pod = one(hub, "Deployment", "fleet-controller")["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container_ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert port["targetPort"] in container_ports


def test_each_job_namespace_has_a_monitor_of_its_superlink_service_only(example: tuple[Repository, Rendered]) -> None:
    repository, _ = example
    rendered = _synth(repository)
    monitors = {path: body for path, body in rendered.items() if body["kind"] == "ServiceMonitor"}
    namespaces = {job.namespace for job in repository.jobs.values()}
    assert len(monitors) == 1 + len(namespaces)
    for job in repository.jobs.values():
        monitor = monitors[f"namespaces/{job.namespace}/servicemonitor-fleet-aggregators.yaml"]
        ref = JobRef(job.name, job.namespace, "uid-1", runtime_for(job.framework).aggregator)
        spec = FederatedLearningSpec.from_job(job, {"clusterSets": list(job.cluster_sets)})
        services = [o for o in federation_objects(spec, ref, None, replicas=1) if o["kind"] == "Service"]
        assert len(services) > 1  # the aggregator's (Flower's SuperLink, OpenFL's aggregator) and its listeners'
        [selected] = [s for s in services if _selects(monitor, s)]
        assert selected["metadata"]["name"] == aggregator_name(ref)
        assert [e["port"] for e in _endpoints(monitor)] == ["progress"]
        assert "progress" in {p["name"] for p in selected["spec"]["ports"]}
        # prometheus-operator names the series' job after this label of the Service.
        assert selected["metadata"]["labels"][monitor["spec"]["jobLabel"]] == job.name
