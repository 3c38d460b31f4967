"""Service: a stable address for pods the hub runs (here, the controller's metrics endpoint)."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class Service(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        selector: dict[str, str],
        ports: list[dict[str, Any]],
        component: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="v1",
            kind="Service",
            name=name,
            namespace=namespace,
            component=component,
            instance=name,
            source=source,
            body={"spec": {"type": "ClusterIP", "selector": dict(selector), "ports": ports}},
        )
