"""ClusterManagementAddOn: registers an add-on with the hub's add-on manager."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class ClusterManagementAddOn(HubObject):
    def __init__(self, scope: Construct, *, name: str, spec: dict[str, Any], component: str, source: str) -> None:
        super().__init__(
            scope,
            api_version="addon.open-cluster-management.io/v1alpha1",
            kind="ClusterManagementAddOn",
            name=name,  # every ManagedClusterAddOn of this add-on carries the same name
            component=component,
            instance=name,
            source=source,
            body={"spec": spec},
        )
