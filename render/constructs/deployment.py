"""Deployment: a long-running hub workload (the controller)."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class Deployment(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        spec: dict[str, Any],
        component: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="apps/v1",
            kind="Deployment",
            name=name,
            namespace=namespace,
            component=component,
            instance=name,
            source=source,
            body={"spec": spec},
        )
