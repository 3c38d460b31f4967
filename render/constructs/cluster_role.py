"""ClusterRole: a named set of permissions across the hub."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class ClusterRole(HubObject):
    def __init__(
        self, scope: Construct, *, name: str, rules: list[dict[str, Any]], component: str, source: str
    ) -> None:
        super().__init__(
            scope,
            api_version="rbac.authorization.k8s.io/v1",
            kind="ClusterRole",
            name=name,
            component=component,
            instance=name,
            source=source,
            body={"rules": rules},
        )


def rule(api_group: str, resources: list[str], verbs: list[str]) -> dict[str, Any]:
    """One policy rule: ``verbs`` on ``resources`` of ``api_group`` (``""`` is the core group)."""
    return {"apiGroups": [api_group], "resources": resources, "verbs": verbs}
