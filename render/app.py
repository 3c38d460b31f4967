"""Build the cdk8s app for a repository and synthesise its manifests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from render.node import use_bundled_node

use_bundled_node()

# cdk8s (which needs JSII_NODE set) before the models: `fleet render` imports this package on a thread so that
# jsii's Node starts while the command imports the models, which must not hold that start back.
from render.charts.base import FleetApp  # noqa: E402

# isort: split
from fleet.repository import Repository  # noqa: E402


@dataclass(frozen=True)
class Manifest:
    """One rendered object and the file (relative to the target's output folder) it is written to."""

    path: str
    body: dict[str, Any]


def _hub(app: FleetApp, repository: Repository) -> None:
    from render.charts.hub import build_hub

    build_hub(app, repository)


def _upstream(app: FleetApp, repository: Repository) -> None:
    from render.charts.upstream import build_upstream

    build_upstream(app, repository)


def _gitops(app: FleetApp, repository: Repository) -> None:
    from render.charts.gitops import build_gitops

    build_gitops(app, repository)


def _observability(app: FleetApp, repository: Repository) -> None:
    from render.charts.observability import build_observability

    build_observability(app, repository)


TARGETS: dict[str, Callable[[FleetApp, Repository], None]] = {
    "hub": _hub,
    "upstream": _upstream,
    "gitops": _gitops,
    "observability": _observability,
}
"""Output targets: ``hub`` for this project's controller, ``upstream`` for the upstream
federation-ai.open-cluster-management.io controller, ``gitops`` for the Argo CD and Flux bootstraps that keep
``hub`` applied, ``observability`` for RHACM's metrics allowlist, dashboard and alerts."""


def synth(repository: Repository, target: str = "hub") -> list[Manifest]:
    """Render ``repository`` for ``target``; the list is sorted by path and each path is unique."""
    app = FleetApp()
    TARGETS[target](app, repository)
    # The bodies live in Python (HubObject.manifest), and so do the lists of charts and of their objects
    # (render.charts.base): chart.to_json() would ship every body to Node and back (6x slower at 1,000 jobs).
    manifests = [Manifest(chart.path_for(o.manifest), o.manifest) for chart in app.folders for o in chart.objects]
    manifests.sort(key=lambda m: m.path)
    # One file per object, one object per file: one object in two files would have two owners in GitOps.
    paths: set[str] = set()
    owners: dict[tuple[str, str, str, str], str] = {}
    for manifest in manifests:
        if manifest.path in paths:
            raise ValueError(f"two rendered objects share the output file {manifest.path}")
        paths.add(manifest.path)
        body, metadata = manifest.body, manifest.body["metadata"]
        identity = (body["apiVersion"], body["kind"], metadata.get("namespace", ""), metadata["name"])
        if identity in owners:
            raise ValueError(f"one object is rendered twice: {owners[identity]} and {manifest.path}")
        owners[identity] = manifest.path
    return manifests


def synth_all(repository: Repository) -> dict[str, list[Manifest]]:
    """Every target's manifests, by target name."""
    return {target: synth(repository, target) for target in TARGETS}
