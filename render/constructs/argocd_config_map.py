"""The ``argocd-cm`` ConfigMap: Argo CD's own settings, here the custom health checks of the hub's kinds."""

from __future__ import annotations

from constructs import Construct

from render.constructs.config_map import ConfigMap

NAME = "argocd-cm"
HEALTH_KEY = "resource.customizations.health.{group}_{kind}"
"""The argocd-cm key of a Lua health check for one kind."""


def health_key(group: str, kind: str) -> str:
    return HEALTH_KEY.format(group=group, kind=kind)


class ArgoCDConfigMap(ConfigMap):
    def __init__(self, scope: Construct, *, namespace: str, data: dict[str, str], source: str) -> None:
        super().__init__(
            scope,
            name=NAME,
            namespace=namespace,
            data=data,
            component="gitops",
            source=source,
            # Argo CD reads its settings only from a ConfigMap carrying these labels.
            labels={"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "argocd"},
        )
