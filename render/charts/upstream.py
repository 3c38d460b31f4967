"""The ``upstream`` target: the jobs as upstream federation-ai.open-cluster-management.io
FederatedLearning resources, for hubs that run the upstream controller.

The upstream controller makes its own Placement from ``client.placement``. The namespace and its
ManagedClusterSetBindings are rendered here; the cluster claims and policies come from the ``hub`` target's
``clusters/`` and ``policies/`` folders.

A job with privacy options (differential privacy, secure aggregation) is left out: the upstream CRD cannot
carry them and its controller would train without them, which is worse than not training there.
"""

from __future__ import annotations

from fleet.placement import placement_spec
from fleet.repository import Repository
from render.charts.base import FleetApp, FolderChart
from render.charts.hub import build_namespaces
from render.constructs.upstream_federated_learning import UpstreamFederatedLearning


def build_upstream(app: FleetApp, repository: Repository) -> None:
    build_namespaces(app, repository)
    for job in repository.jobs.values():
        if job.privacy.enabled:
            continue
        chart = FolderChart(app, f"jobs/{job.name}")
        spec = placement_spec(job, repository.policies.values())
        UpstreamFederatedLearning(chart, job=job, placement=spec, source=repository.source(job).file)
