"""Kustomization (kustomize.toolkit.fluxcd.io): Flux keeps one folder of the rendered manifests applied."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject


class FluxKustomization(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        path: str,
        git_repository: str,
        depends_on: list[str],
        wait: bool,
        source: str,
        interval: str = "10m",
        retry_interval: str = "1m",
        timeout: str = "5m",
        health_check_exprs: list[dict[str, str]] | None = None,
    ) -> None:
        spec: dict[str, Any] = {
            "interval": interval,
            "retryInterval": retry_interval,
            "timeout": timeout,
            "path": path,
            "prune": True,
            "wait": wait,
            "sourceRef": {"kind": "GitRepository", "name": git_repository},
        }
        if depends_on:
            spec["dependsOn"] = [{"name": dependency} for dependency in depends_on]
        if health_check_exprs:
            # CEL health checks for kinds kstatus cannot judge (evaluated because ``wait`` is on).
            spec["healthCheckExprs"] = health_check_exprs
        super().__init__(
            scope,
            api_version="kustomize.toolkit.fluxcd.io/v1",
            kind="Kustomization",
            name=name,
            namespace=namespace,
            component="gitops",
            instance=name,
            source=source,
            body={"spec": spec},
        )
