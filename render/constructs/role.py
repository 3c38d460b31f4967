"""Role: a named set of permissions within one namespace of the hub."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class Role(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        rules: list[dict[str, Any]],
        component: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="rbac.authorization.k8s.io/v1",
            kind="Role",
            name=name,
            namespace=namespace,
            component=component,
            instance=name,
            source=source,
            body={"rules": rules},
        )


def named_rule(api_group: str, resources: list[str], names: list[str], verbs: list[str]) -> dict[str, Any]:
    """``verbs`` on only the objects ``names`` of ``resources``; Kubernetes cannot limit ``create`` (nor
    ``list`` and ``watch`` without a field selector) by name, so those belong in a rule without names."""
    return {"apiGroups": [api_group], "resources": resources, "resourceNames": names, "verbs": verbs}
