"""ConfigMap: settings and files that other components read (RHACM's observability, Argo CD's own settings)."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class ConfigMap(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        data: dict[str, str],
        component: str,
        source: str,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            scope,
            api_version="v1",
            kind="ConfigMap",
            name=name,
            namespace=namespace,
            component=component,
            instance=name,
            source=source,
            labels=labels,
            annotations=annotations,
            body={"data": dict(sorted(data.items()))},
        )
