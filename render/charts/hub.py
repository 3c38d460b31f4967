"""The ``hub`` target: everything this project's controller and OCM need on the hub.

Folders: ``controller/`` (CRD, RBAC, Deployment), ``addon/`` (the collaborator add-on), ``clustersets/``,
``clusters/<cluster>/`` (the labels and cluster set the controller applies to its ManagedCluster, ClusterClaims,
add-on install), ``namespaces/<namespace>/`` (the namespace and its ManagedClusterSetBindings), ``jobs/<job>/``
(FederatedLearning, Placement), ``policies/<policy>/``.
"""

from __future__ import annotations

from collections import defaultdict

from fleet.claims import cluster_claims
from fleet.hub import ADDON_INSTALL_NAMESPACE, ADDON_NAME, CLAIMS_WORK_NAME, JOB_LABEL
from fleet.models import Job
from fleet.placement import governing_policies, placement_spec
from fleet.repository import Repository
from render.charts.base import FleetApp, FolderChart
from render.constructs.federated_learning import FederatedLearning
from render.constructs.managed_cluster_addon import ManagedClusterAddOn
from render.constructs.managed_cluster_labels import ManagedClusterLabels
from render.constructs.managed_cluster_set import ManagedClusterSet
from render.constructs.managed_cluster_set_binding import ManagedClusterSetBinding
from render.constructs.manifest_work import ManifestWork, cluster_claim
from render.constructs.namespace import Namespace
from render.constructs.placement import Placement


def build_hub(app: FleetApp, repository: Repository) -> None:
    from render.charts.addon import build_addon
    from render.charts.controller import build_controller
    from render.charts.policies import build_policies

    build_controller(app, repository)
    build_addon(app, repository)
    build_cluster_sets(app, repository)
    build_clusters(app, repository)
    build_namespaces(app, repository)
    for job in repository.jobs.values():
        build_job(app, repository, job)
    build_policies(app, repository)


def build_cluster_sets(app: FleetApp, repository: Repository) -> None:
    chart = FolderChart(app, "clustersets")
    sources: dict[str, list[str]] = defaultdict(list)
    for cluster in repository.clusters.values():
        sources[cluster.cluster_set].append(repository.source(cluster).file)
    for job in repository.jobs.values():
        for cluster_set in job.cluster_sets:
            sources[cluster_set].append(repository.source(job).file)
    for name in sorted(sources):
        ManagedClusterSet(chart, name=name, source=",".join(sorted(set(sources[name]))))


def build_clusters(app: FleetApp, repository: Repository) -> None:
    for cluster in repository.clusters.values():
        chart = FolderChart(app, f"clusters/{cluster.name}")
        source = repository.source(cluster).file
        # What Placements select on: the declared labels and the set, which the controller applies to the hub's
        # own ManagedCluster and removes when this object is pruned.
        ManagedClusterLabels(chart, cluster=cluster, source=source)
        claims = [cluster_claim(name, value) for name, value in cluster_claims(cluster).items()]
        ManifestWork(
            chart,
            name=CLAIMS_WORK_NAME,
            cluster=cluster.name,
            manifests=claims,
            component="cluster-claims",
            source=source,
        )
        if cluster.datasets:  # a cluster holding no data is never a collaborator
            ManagedClusterAddOn(
                chart,
                addon=ADDON_NAME,
                cluster=cluster.name,
                install_namespace=ADDON_INSTALL_NAMESPACE,
                source=source,
            )


def build_namespaces(app: FleetApp, repository: Repository) -> None:
    """One Namespace per hub namespace the jobs use, bound to exactly the cluster sets its jobs use."""
    jobs_by_namespace: dict[str, list[Job]] = defaultdict(list)
    for job in repository.jobs.values():
        jobs_by_namespace[job.namespace].append(job)
    for namespace, jobs in sorted(jobs_by_namespace.items()):
        chart = FolderChart(app, f"namespaces/{namespace}")
        source = ",".join(sorted(repository.source(job).file for job in jobs))
        Namespace(chart, name=namespace, component="job", source=source)
        for cluster_set in sorted({s for job in jobs for s in repository.bound_cluster_sets(job)}):
            ManagedClusterSetBinding(
                chart, cluster_set=cluster_set, namespace=namespace, component="job", source=source
            )


def build_job(app: FleetApp, repository: Repository, job: Job) -> None:
    chart = FolderChart(app, f"jobs/{job.name}")
    source = repository.source(job).file
    spec = placement_spec(job, repository.policies.values())
    policies = [p.name for p in governing_policies(job, repository.policies.values())]
    Placement(
        chart,
        name=job.name,
        namespace=job.namespace,
        spec=spec,
        component="job",
        instance=job.name,
        source=source,
        policies=policies,
        labels={JOB_LABEL: job.name},
    )
    FederatedLearning(chart, job=job, placement=spec, source=source)
