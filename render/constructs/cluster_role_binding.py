"""ClusterRoleBinding: grants a ClusterRole to a ServiceAccount across the hub."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class ClusterRoleBinding(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        cluster_role: str,
        service_account: str,
        namespace: str,
        component: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="rbac.authorization.k8s.io/v1",
            kind="ClusterRoleBinding",
            name=name,
            component=component,
            instance=name,
            source=source,
            body={
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": cluster_role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
            },
        )
