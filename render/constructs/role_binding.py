"""RoleBinding: grants a Role to a ServiceAccount within the Role's namespace."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class RoleBinding(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        role: str,
        service_account: str,
        service_account_namespace: str,
        component: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="rbac.authorization.k8s.io/v1",
            kind="RoleBinding",
            name=name,
            namespace=namespace,
            component=component,
            instance=name,
            source=source,
            body={
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": role,
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": service_account, "namespace": service_account_namespace}
                ],
            },
        )
