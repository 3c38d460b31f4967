"""GitRepository (source.toolkit.fluxcd.io): where Flux fetches the rendered manifests from."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class FluxGitRepository(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        url: str,
        branch: str,
        interval: str,
        ignore: str,
        source: str,
    ) -> None:
        super().__init__(
            scope,
            api_version="source.toolkit.fluxcd.io/v1",
            kind="GitRepository",
            name=name,
            namespace=namespace,
            component="gitops",
            instance=name,
            source=source,
            body={"spec": {"url": url, "ref": {"branch": branch}, "interval": interval, "ignore": ignore}},
        )
