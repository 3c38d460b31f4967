"""The ``gitops`` target: how Argo CD or Flux keeps the ``hub`` target applied to the OCM hub.

It is a target of its own (``manifests/gitops/``) rather than a folder of ``hub``: a person applies a
bootstrap once, to the GitOps tool's namespace, and from then on the tool applies ``manifests/hub``; the
hub's own Applications and Kustomizations never manage their bootstrap.

- ``argocd/``: the ``argocd-cm`` entries (health checks for FederatedLearning, for ManagedCluster, whose labels
  Git sets, and for Application, so that the parent waits for each child's health before the next sync wave)
  and the ``fleet`` root Application over ``argocd/apps/``;
- ``argocd/apps/``: one Application per hub folder, ordered by sync wave: the controller (its CRD) first, the
  add-on and cluster sets next, then namespaces, clusters and policies, the jobs last;
- ``flux/``: a GitRepository and one Kustomization per hub folder, each depending on the folders of the wave
  before, so the jobs depend on all of the infrastructure; the clusters' one checks each ManagedCluster's
  registration with CEL, as the Lua check does for Argo CD.

Neither tool may ever delete a ManagedCluster: the partial ones Git applies carry the annotations that say so
(`render.constructs.managed_cluster`).

Both read ``GIT_URL`` at ``GIT_BRANCH``, with the rendered output committed under ``MANIFESTS`` (a fork
changes these three constants and renders).
"""

from __future__ import annotations

from fleet.claims import API_GROUP
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
controller's FederatedLearning CRD; OCM's own are installed with OCM), bindings after their cluster sets,
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

MANAGED_CLUSTER_HEALTH = """\
-- ManagedCluster (cluster.open-cluster-management.io): Git sets its labels only; its health is its registration,
-- which a hub administrator completes (accept) and the klusterlet keeps (join). A joined cluster that is not
-- available now stays Healthy: OCM taints it, so Placements skip it, and one offline spoke holds no wave back.
local hs = {}
local function condition(kind)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end
local accepted = condition("HubAcceptedManagedCluster")
if accepted ~= nil and accepted.status == "False" then
  hs.status = "Degraded"
  hs.message = accepted.message or "the hub administrator denied the cluster"
  return hs
end
if accepted == nil or accepted.status ~= "True" then
  hs.status = "Progressing"
  hs.message = "labels applied; waiting for the cluster to register and a hub administrator to accept it "
    .. "(clusteradm accept --clusters " .. obj.metadata.name .. ")"
  return hs
end
local joined = condition("ManagedClusterJoined")
if joined == nil or joined.status ~= "True" then
  hs.status = "Progressing"
  hs.message = "accepted; waiting for the klusterlet to join"
  return hs
end
local available = condition("ManagedClusterConditionAvailable")
hs.status = "Healthy"
if available ~= nil and available.status == "True" then
  hs.message = "joined and available"
else
  hs.message = "joined, not available now: OCM taints it and no Placement selects it"
  if available ~= nil and available.message ~= nil then
    hs.message = hs.message .. " (" .. available.message .. ")"
  end
end
return hs
"""

MANAGED_CLUSTER_HEALTH_EXPRS = [
    {
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        # The same verdicts as MANAGED_CLUSTER_HEALTH: denied fails; joined is current; anything else waits.
        "failed": "has(status.conditions) && status.conditions.exists(c, c.type == 'HubAcceptedManagedCluster' && "
        "c.status == 'False')",
        "current": "has(status.conditions) && status.conditions.exists(c, c.type == 'ManagedClusterJoined' && "
        "c.status == 'True')",
    }
]
"""Flux's CEL health check of the ManagedClusters whose labels the clusters folder applies."""

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
            health_key("cluster.open-cluster-management.io", "ManagedCluster"): MANAGED_CLUSTER_HEALTH,
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
            health_check_exprs=MANAGED_CLUSTER_HEALTH_EXPRS if folder == "clusters" else None,
        )
