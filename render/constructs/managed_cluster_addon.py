"""ManagedClusterAddOn: installs the collaborator add-on on one managed cluster."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class ManagedClusterAddOn(HubObject):
    def __init__(self, scope: Construct, *, addon: str, cluster: str, install_namespace: str, source: str) -> None:
        super().__init__(
            scope,
            api_version="addon.open-cluster-management.io/v1alpha1",
            kind="ManagedClusterAddOn",
            name=addon,  # must equal the ClusterManagementAddOn's name
            namespace=cluster,
            component="collaborator-addon",
            instance=cluster,
            source=source,
            body={"spec": {"installNamespace": install_namespace}},
        )
