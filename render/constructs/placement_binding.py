"""PlacementBinding: binds governance Policies to the Placement that chooses their clusters."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class PlacementBinding(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        placement: str,
        policies: list[str],
        component: str,
        instance: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="policy.open-cluster-management.io/v1",
            kind="PlacementBinding",
            name=name,
            namespace=namespace,  # the Placement and the Policies must share this namespace
            component=component,
            instance=instance,
            source=source,
            # A PlacementBinding carries its fields at the top level, not under spec.
            body={
                "placementRef": {
                    "apiGroup": "cluster.open-cluster-management.io",
                    "kind": "Placement",
                    "name": placement,
                },
                "subjects": [
                    {"apiGroup": "policy.open-cluster-management.io", "kind": "Policy", "name": policy}
                    for policy in policies
                ],
            },
        )
