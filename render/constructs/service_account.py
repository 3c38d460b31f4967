"""ServiceAccount: the identity a hub workload runs as."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class ServiceAccount(HubObject):
    def __init__(self, scope: Construct, *, name: str, namespace: str, component: str, source: str) -> None:
        super().__init__(
            scope,
            api_version="v1",
            kind="ServiceAccount",
            name=name,
            namespace=namespace,
            component=component,
            instance=name,
            source=source,
            # The controller talks to the API server with this account's token.
            body={"automountServiceAccountToken": True},
        )
