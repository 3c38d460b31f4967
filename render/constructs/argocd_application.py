"""Application (argoproj.io): Argo CD keeps one folder of the rendered manifests applied to the hub."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject

SYNC_WAVE_ANNOTATION = "argocd.argoproj.io/sync-wave"
RESOURCES_FINALIZER = "resources-finalizer.argocd.argoproj.io"
"""Deleting the Application deletes what it applied (cascade), so removing a folder's app leaves nothing."""
IN_CLUSTER = "https://kubernetes.default.svc"
"""Argo CD runs on the hub it manages."""


class ArgoCDApplication(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        project: str,
        repo_url: str,
        revision: str,
        path: str,
        sync_options: list[str],
        component: str,
        source: str,
        sync_wave: int | None = None,
    ) -> None:
        super().__init__(
            scope,
            api_version="argoproj.io/v1alpha1",
            kind="Application",
            name=name,
            namespace=namespace,
            component=component,
            instance=name,
            source=source,
            annotations={SYNC_WAVE_ANNOTATION: str(sync_wave)} if sync_wave is not None else None,
            body={
                "spec": {
                    "project": project,
                    "source": {
                        "repoURL": repo_url,
                        "targetRevision": revision,
                        "path": path,
                        "directory": {"recurse": True},
                    },
                    "destination": {"server": IN_CLUSTER},
                    "syncPolicy": {
                        "automated": {"prune": True, "selfHeal": True},
                        **({"syncOptions": sync_options} if sync_options else {}),
                        "retry": {
                            "limit": 5,
                            "backoff": {"duration": "10s", "factor": 2, "maxDuration": "3m"},
                        },
                    },
                }
            },
        )
        self.manifest["metadata"]["finalizers"] = [RESOURCES_FINALIZER]
