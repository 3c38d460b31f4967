"""AddOnDeploymentConfig: the values an add-on's agent is installed with (variables, namespace, nodes)."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class AddOnDeploymentConfig(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        spec: dict[str, Any],
        component: str,
        instance: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="addon.open-cluster-management.io/v1alpha1",
            kind="AddOnDeploymentConfig",
            name=name,
            namespace=namespace,
            component=component,
            instance=instance,
            source=source,
            body={"spec": spec},
        )
