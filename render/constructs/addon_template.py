"""AddOnTemplate: the agent an add-on deploys on each managed cluster, and how the agent is registered."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class AddOnTemplate(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        addon: str,
        manifests: list[dict[str, Any]],
        registration: list[dict[str, Any]],
        component: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="addon.open-cluster-management.io/v1alpha1",
            kind="AddOnTemplate",
            name=name,
            component=component,
            instance=addon,
            source=source,
            body={
                "spec": {
                    "addonName": addon,
                    "agentSpec": {"workload": {"manifests": manifests}},
                    "registration": registration,
                }
            },
        )
