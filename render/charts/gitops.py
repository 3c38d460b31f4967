"""The ``gitops`` target: how Argo CD or Flux keeps the ``hub`` target applied to the OCM hub.

It is a target of its own (``manifests/gitops/``) rather than a folder of ``hub``: a person applies a
bootstrap once, to the GitOps tool's namespace, and from then on the tool applies ``manifests/hub``; the
hub's own Applications and Kustomizations never manage their bootstrap.

- ``argocd/``: the ``argocd-cm`` entries (health checks for FederatedLearning, for ManagedClusterLabels, whose
  labels the controller applies to a ManagedCluster, and for Application, so that the parent waits for each
  child's health before the next sync wave)
  and the ``fleet`` root Application over ``argocd/apps/``;
- ``argocd/apps/``: one Application per hub folder, ordered by sync wave: the controller (its CRD) first, the
  add-on and cluster sets next, then namespaces, clusters and policies, the jobs last;
- ``flux/``: a GitRepository and one Kustomization per hub folder, each depending on the folders of the wave
  before, so the jobs depend on all of the infrastructure; the clusters' one checks each ManagedClusterLabels
  object with CEL, as the Lua check does for Argo CD.

Neither tool ever writes a ManagedCluster, so neither can delete one: Git declares a cluster's labels in a
ManagedClusterLabels object, which both prune normally (`render.constructs.managed_cluster_labels`).

Both read ``GIT_URL`` at ``GIT_BRANCH``, with the rendered output committed under ``MANIFESTS`` (a fork
changes these three constants and renders).
"""

from __future__ import annotations

from fleet.claims import API_GROUP
from fleet.crd import LABELS_KIND, VERSION
from fleet.repository import Repository
from render.charts.base import FleetApp, FolderChart
from render.constructs.argocd_application import ArgoCDApplication
from render.constructs.argocd_config_map import ArgoCDConfigMap, health_key
from render.constructs.flux_git_repository import FluxGitRepository
from render.constructs.flux_kustomization import FluxKustomization

SOURCE = "render/charts/gitops.py"
GIT_URL = "https://github.com/fleet-fl/fleet.git"
GIT_BRANCH = "main"
MANIFESTS = "manifests"
"""Where ``fleet render`` writes, relative to the repository root."""
HUB_TARGET = "hub"
ARGOCD_NAMESPACE = "argocd"
ARGOCD_PROJECT = "default"
FLUX_NAMESPACE = "flux-system"
NAME = "fleet"

HUB_FOLDERS: dict[str, int] = {
    "controller": 0,
    "addon": 1,
    "clustersets": 1,
    "namespaces": 2,
    "clusters": 2,
    "policies": 3,
    "jobs": 4,
}
"""Each top-level folder of the hub target and its sync wave: custom resources come after their CRDs (the
controller's FederatedLearning and ManagedClusterLabels CRDs, and the RBAC the labels' finalizer needs; OCM's own
are installed with OCM), ManagedClusterLabels after the cluster sets they join, bindings after their cluster sets,
ManagedClusterAddOns after the add-on, jobs after everything."""

_MISSING_CRDS_OK = "SkipDryRunOnMissingResource=true"
"""Dry runs of custom resources fail while their CRD is not yet served; the wave order installs it first."""

FEDERATED_LEARNING_HEALTH = """\
-- FederatedLearning (federation.fleet.dev): Waiting and Running are Progressing, Completed is Healthy,
-- Failed is Degraded; the message is the controller's status.message.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the controller to report a phase"
  return hs
end
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "SpecAccepted" and condition.status == "False" then
      hs.status = "Degraded"
      hs.message = condition.message or "the controller refused the spec change"
      return hs
    end
  end
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the controller to observe generation " .. generation
  return hs
end
local phase = status.phase
if phase == "Completed" then
  hs.status = "Healthy"
elseif phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Waiting" or phase == "Running" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
  hs.message = "unknown phase " .. tostring(phase)
  return hs
end
if status.message ~= nil and status.message ~= "" then
  hs.message = status.message
elseif phase == "Running" and status.currentRound ~= nil then
  hs.message = "round " .. status.currentRound .. " of " .. (status.totalRounds or "?")
else
  hs.message = phase
end
return hs
"""

MANAGED_CLUSTER_LABELS_HEALTH = """\
-- ManagedClusterLabels (federation.fleet.dev): Healthy once the controller has applied this generation's labels
-- to the ManagedCluster; Progressing while it has not, or while no ManagedCluster of that name is registered
-- (nothing can be placed there yet); Degraded when the hub refused the labels.
local hs = {}
local status = obj.status
local generation = obj.metadata and obj.metadata.generation
local observed = status and status.observedGeneration
if observed == nil or (generation ~= nil and observed < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the fleet controller to apply the labels"
  return hs
end
local applied = nil
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Applied" then
      applied = c
    end
  end
end
if applied == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the fleet controller to apply the labels"
elseif applied.status == "True" then
  hs.status = "Healthy"
  hs.message = applied.message or "labels applied"
elseif applied.reason == "NotRegistered" then
  hs.status = "Progressing"
  hs.message = applied.message or "waiting for the cluster to register"
else
  hs.status = "Degraded"
  hs.message = applied.message or "the hub refused the labels"
end
return hs
"""

_APPLIED = "status.conditions.exists(c, c.type == 'Applied' && c.status == '{status}'{reason})"
MANAGED_CLUSTER_LABELS_HEALTH_EXPRS = [
    {
        "apiVersion": f"{API_GROUP}/{VERSION}",
        "kind": LABELS_KIND,
        # The same verdicts as MANAGED_CLUSTER_LABELS_HEALTH: refused fails; applied to this generation is
        # current; anything else (not observed yet, not registered) waits.
        "failed": "has(status.conditions) && " + _APPLIED.format(status="False", reason=" && c.reason == 'Refused'"),
        "current": "has(status.observedGeneration) && status.observedGeneration == metadata.generation && "
        "has(status.conditions) && " + _APPLIED.format(status="True", reason=""),
    }
]
"""Flux's CEL health check of the ManagedClusterLabels objects of the clusters folder."""

APPLICATION_HEALTH = """\
-- Application (argoproj.io): the child's own health, so that the root Application's sync waves wait for
-- each folder to be healthy (Argo CD has no built-in health for Applications since 1.8).
local hs = {}
hs.status = "Progressing"
hs.message = ""
if obj.status ~= nil and obj.status.health ~= nil and obj.status.health.status ~= nil then
  hs.status = obj.status.health.status
  if obj.status.health.message ~= nil then
    hs.message = obj.status.health.message
  end
end
return hs
"""


def hub_path(folder: str) -> str:
    return f"{MANIFESTS}/{HUB_TARGET}/{folder}"


def build_gitops(app: FleetApp, repository: Repository) -> None:
    del repository  # the bootstraps cover the hub target's folders, whatever the jobs are
    build_argocd(app)
    build_flux(app)


def build_argocd(app: FleetApp) -> None:
    bootstrap = FolderChart(app, "argocd")
    ArgoCDConfigMap(
        bootstrap,
        namespace=ARGOCD_NAMESPACE,
        data={
            health_key(API_GROUP, "FederatedLearning"): FEDERATED_LEARNING_HEALTH,
            health_key(API_GROUP, LABELS_KIND): MANAGED_CLUSTER_LABELS_HEALTH,
            health_key("argoproj.io", "Application"): APPLICATION_HEALTH,
        },
        source=SOURCE,
    )
    ArgoCDApplication(
        bootstrap,
        name=NAME,
        namespace=ARGOCD_NAMESPACE,
        project=ARGOCD_PROJECT,
        repo_url=GIT_URL,
        revision=GIT_BRANCH,
        path=f"{MANIFESTS}/gitops/argocd/apps",
        sync_options=[],
        component="gitops",
        source=SOURCE,
    )
    apps = FolderChart(app, "argocd/apps")
    for folder, wave in HUB_FOLDERS.items():
        # The controller's folder holds the CRD and only built-in kinds; every other folder holds custom
        # resources. Server-side apply: a CRD outgrows the last-applied annotation of a client-side apply.
        options = ["ServerSideApply=true"] if folder == "controller" else [_MISSING_CRDS_OK]
        ArgoCDApplication(
            apps,
            name=f"{NAME}-{folder}",
            namespace=ARGOCD_NAMESPACE,
            project=ARGOCD_PROJECT,
            repo_url=GIT_URL,
            revision=GIT_BRANCH,
            path=hub_path(folder),
            sync_options=options,
            component="gitops",
            source=SOURCE,
            sync_wave=wave,
        )


def build_flux(app: FleetApp) -> None:
    chart = FolderChart(app, "flux")
    FluxGitRepository(
        chart,
        name=NAME,
        namespace=FLUX_NAMESPACE,
        url=GIT_URL,
        branch=GIT_BRANCH,
        interval="1m",
        # Fetch only the rendered hub manifests: the rest of the repository is not for the cluster.
        ignore=f"/*\n!/{MANIFESTS}/{HUB_TARGET}/\n",
        source=SOURCE,
    )
    waves = sorted(set(HUB_FOLDERS.values()))
    for folder, wave in HUB_FOLDERS.items():
        earlier = [w for w in waves if w < wave]
        before = [f"{NAME}-{f}" for f, w in HUB_FOLDERS.items() if earlier and w == earlier[-1]]
        FluxKustomization(
            chart,
            name=f"{NAME}-{folder}",
            namespace=FLUX_NAMESPACE,
            path=f"./{hub_path(folder)}",
            git_repository=NAME,
            depends_on=before,
            # Jobs run for hours: waiting on them would hold every later reconciliation.
            wait=folder != "jobs",
            source=SOURCE,
            health_check_exprs=MANAGED_CLUSTER_LABELS_HEALTH_EXPRS if folder == "clusters" else None,
        )
