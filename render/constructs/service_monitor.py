"""ServiceMonitor (prometheus-operator's ``monitoring.coreos.com/v1``): which Services' endpoints a Prometheus run
by the operator scrapes. On OpenShift the user workload monitoring stack reads the ServiceMonitors of user
namespaces, and RHACM forwards what it scrapes that the metrics allowlist names."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject

API_VERSION = "monitoring.coreos.com/v1"
KIND = "ServiceMonitor"


class ServiceMonitor(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        selector: dict[str, str],
        endpoints: list[dict[str, Any]],
        component: str,
        source: str,
        job_label: str | None = None,
    ) -> None:
        spec: dict[str, Any] = {}
        if job_label is not None:
            spec["jobLabel"] = job_label
        # No namespaceSelector: the monitor's own namespace, the only one a user workload monitor may select.
        spec["selector"] = {"matchLabels": dict(selector)}
        spec["endpoints"] = endpoints
        super().__init__(
            scope,
            api_version=API_VERSION,
            kind=KIND,
            name=name,
            namespace=namespace,
            component=component,
            instance=name,
            source=source,
            body={"spec": spec},
        )
