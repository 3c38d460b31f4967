"""CustomResourceDefinition: a kind of the project's own, served by the hub's API server."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class CustomResourceDefinition(HubObject):
    def __init__(self, scope: Construct, *, spec: dict[str, Any], component: str, instance: str, source: str) -> None:
        names = spec["names"]
        super().__init__(
            scope,
            api_version="apiextensions.k8s.io/v1",
            kind="CustomResourceDefinition",
            name=f"{names['plural']}.{spec['group']}",  # the API server requires <plural>.<group>
            component=component,
            instance=instance,
            source=source,
            body={"spec": spec},
        )
