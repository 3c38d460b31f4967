"""The gitops target: Argo CD and Flux bootstraps over the hub folders; valid, ordered, working health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chart_helpers import Rendered, assert_valid

from fleet.models import FederatedLearningStatus, ManagedClusterLabelsStatus
from fleet.repository import Repository
from render.charts.gitops import GIT_URL, HUB_FOLDERS, MANIFESTS

FL_HEALTH_KEY = "resource.customizations.health.federation.fleet.dev_FederatedLearning"
APP_HEALTH_KEY = "resource.customizations.health.argoproj.io_Application"
MCL_HEALTH_KEY = "resource.customizations.health.federation.fleet.dev_ManagedClusterLabels"


@pytest.fixture(scope="module")
def gitops(example: tuple[Repository, Rendered]) -> Rendered:
    import render

    return {m.path: m.body for m in render.synth(example[0], "gitops")}


def _of_kind(rendered: Rendered, kind: str) -> dict[str, dict[str, Any]]:
    return {body["metadata"]["name"]: body for body in rendered.values() if body["kind"] == kind}


def test_valid_against_the_argo_cd_and_flux_crds(gitops: Rendered, crds_dir: Path) -> None:
    assert {body["kind"] for body in gitops.values()} == {
        "Application",
        "ConfigMap",
        "GitRepository",
        "Kustomization",
    }
    assert_valid(gitops.items(), crds_dir)


def test_every_hub_folder_is_applied_once(example: tuple[Repository, Rendered], gitops: Rendered) -> None:
    hub_folders = {path.split("/", 1)[0] for path in example[1]}
    assert hub_folders == set(HUB_FOLDERS)
    applications = _of_kind(gitops, "Application")
    children = {a["spec"]["source"]["path"] for n, a in applications.items() if n != "fleet"}
    assert children == {f"{MANIFESTS}/hub/{folder}" for folder in hub_folders}
    kustomizations = _of_kind(gitops, "Kustomization")
    assert {k["spec"]["path"] for k in kustomizations.values()} == {f"./{p}" for p in children}


def test_argo_cd_sync_waves_put_crds_and_controller_first(gitops: Rendered) -> None:
    applications = _of_kind(gitops, "Application")
    root = applications.pop("fleet")
    assert root["spec"]["source"]["path"] == f"{MANIFESTS}/gitops/argocd/apps"
    wave = {
        name.removeprefix("fleet-"): int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        for name, app in applications.items()
    }
    assert wave["controller"] < min(w for f, w in wave.items() if f != "controller")
    assert wave["jobs"] > max(w for f, w in wave.items() if f != "jobs")
    assert wave["clustersets"] < wave["namespaces"] and wave["addon"] < wave["clusters"]
    for name, app in [*applications.items(), ("fleet", root)]:
        spec = app["spec"]
        assert spec["source"]["repoURL"] == GIT_URL
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}, name
        assert "resources-finalizer.argocd.argoproj.io" in app["metadata"]["finalizers"]
        options = spec["syncPolicy"].get("syncOptions", [])
        if name not in ("fleet", "fleet-controller"):  # custom resources: their CRD may not be served yet
            assert "SkipDryRunOnMissingResource=true" in options, name


def test_flux_jobs_depend_on_all_the_infrastructure(gitops: Rendered) -> None:
    kustomizations = _of_kind(gitops, "Kustomization")
    [repository] = _of_kind(gitops, "GitRepository").values()
    assert repository["spec"]["url"] == GIT_URL
    depends = {name: {d["name"] for d in k["spec"].get("dependsOn", [])} for name, k in kustomizations.items()}
    assert all(dependency in depends for names in depends.values() for dependency in names)

    def reachable(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        assert name not in seen, f"dependency cycle through {name}"
        found = set(depends[name])
        for dependency in depends[name]:
            found |= reachable(dependency, seen | {name})
        return found

    assert reachable("fleet-jobs") == set(depends) - {"fleet-jobs"}
    assert depends["fleet-controller"] == set()
    for name, k in kustomizations.items():
        assert k["spec"]["prune"] is True and k["spec"]["sourceRef"]["name"] == repository["metadata"]["name"]
        assert k["spec"]["wait"] is (name != "fleet-jobs")


# --- the Lua health checks, run by a real Lua ------------------------------------------------------------


def _health(script: str, resource: dict[str, Any]) -> dict[str, Any]:
    from lupa import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(resource, recursive=True)
    result = lua.execute(script)
    return dict(result.items())


def _job(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "apiVersion": "federation.fleet.dev/v1alpha1",
        "kind": "FederatedLearning",
        "metadata": {"name": "mnist-digits", "namespace": "fl-mnist-digits", "generation": generation},
        "spec": {},
    }
    if status is not None:
        resource["status"] = status
    return resource


def _status(**fields: Any) -> dict[str, Any]:
    """A status as the controller writes it: the model's own JSON, so the Lua reads the real field names."""
    return FederatedLearningStatus.model_validate(fields).model_dump(mode="json", by_alias=True)


@pytest.fixture(scope="module")
def config_map(gitops: Rendered) -> dict[str, Any]:
    [body] = _of_kind(gitops, "ConfigMap").values()
    return body


def test_config_map_is_the_one_argo_cd_reads(config_map: dict[str, Any]) -> None:
    assert config_map["metadata"]["name"] == "argocd-cm" and config_map["metadata"]["namespace"] == "argocd"
    assert config_map["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    assert set(config_map["data"]) == {FL_HEALTH_KEY, APP_HEALTH_KEY, MCL_HEALTH_KEY}


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Waiting", "Progressing"),
        ("Running", "Progressing"),
        ("Completed", "Healthy"),
        ("Failed", "Degraded"),
    ],
)
def test_federated_learning_phases(config_map: dict[str, Any], phase: str, expected: str) -> None:
    status = _status(phase=phase, message=f"the job is {phase.lower()}", observedGeneration=1)
    health = _health(config_map["data"][FL_HEALTH_KEY], _job(status))
    assert health == {"status": expected, "message": f"the job is {phase.lower()}"}


def test_federated_learning_edge_cases(config_map: dict[str, Any]) -> None:
    script = config_map["data"][FL_HEALTH_KEY]
    assert _health(script, _job(None))["status"] == "Progressing"
    running = _health(script, _job(_status(phase="Running", currentRound=3, totalRounds=5, observedGeneration=1)))
    assert running == {"status": "Progressing", "message": "round 3 of 5"}
    behind = _health(script, _job(_status(phase="Completed", observedGeneration=1), generation=2))
    assert behind["status"] == "Progressing" and "generation 2" in behind["message"]
    refused = _status(
        phase="Running",
        observedGeneration=1,
        conditions=[
            {
                "type": "SpecAccepted",
                "status": "False",
                "reason": "RunInProgress",
                "message": "a running job keeps its spec; delete and recreate it to change it",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    )
    degraded = _health(script, _job(refused, generation=2))
    assert degraded == {"status": "Degraded", "message": refused["conditions"][0]["message"]}
    unknown = _health(script, _job({"phase": "Paused"}))
    assert unknown["status"] == "Unknown" and "Paused" in unknown["message"]


def test_application_health_follows_the_child(config_map: dict[str, Any]) -> None:
    script = config_map["data"][APP_HEALTH_KEY]
    app = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "fleet-jobs"}}
    assert _health(script, app) == {"status": "Progressing", "message": ""}
    app["status"] = {"health": {"status": "Degraded", "message": "one job failed"}}
    assert _health(script, app) == {"status": "Degraded", "message": "one job failed"}


# --- ManagedClusterLabels: health (Lua for Argo CD, CEL for Flux) is whether the controller applied the labels -----


def _declaration(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "apiVersion": "federation.fleet.dev/v1alpha1",
        "kind": "ManagedClusterLabels",
        "metadata": {"name": "eu-west-hospital", "generation": generation},
        "spec": {"clusterSet": "research-eu", "labels": {"region": "eu-west"}},
    }
    if status is not None:
        resource["status"] = status
    return resource


def _labels_status(observed: int, state: str | None = None, reason: str = "Applied") -> dict[str, Any]:
    """A status as the controller writes it: the model's own JSON."""
    conditions = []
    if state is not None:
        conditions.append(
            {
                "type": "Applied",
                "status": state,
                "reason": reason,
                "message": f"{reason} message",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        )
    status = {"observedGeneration": observed, "appliedLabels": {}, "conditions": conditions}
    return ManagedClusterLabelsStatus.model_validate(status).model_dump(mode="json", by_alias=True)


LABEL_STATES = {
    # state: (the object, Argo CD's health, Flux's verdict)
    "not yet seen by the controller": (_declaration(1, None), "Progressing", "waiting"),
    "applied": (_declaration(1, _labels_status(1, "True")), "Healthy", "current"),
    "applied to an older generation": (_declaration(2, _labels_status(1, "True")), "Progressing", "waiting"),
    "cluster not registered yet": (
        _declaration(1, _labels_status(1, "False", "NotRegistered")),
        "Progressing",
        "waiting",
    ),
    "refused by the hub": (_declaration(1, _labels_status(1, "False", "Refused")), "Degraded", "failed"),
}


def test_the_bootstraps_cover_the_declarations(config_map: dict[str, Any], gitops: Rendered) -> None:
    assert MCL_HEALTH_KEY in config_map["data"]
    [check] = _of_kind(gitops, "Kustomization")["fleet-clusters"]["spec"]["healthCheckExprs"]
    assert (check["apiVersion"], check["kind"]) == ("federation.fleet.dev/v1alpha1", "ManagedClusterLabels")
    # Their CRD (controller) and the cluster sets they join (clustersets) come in earlier waves.
    assert HUB_FOLDERS["controller"] < HUB_FOLDERS["clustersets"] < HUB_FOLDERS["clusters"]


@pytest.mark.parametrize("state", list(LABEL_STATES))
def test_managed_cluster_labels_health(config_map: dict[str, Any], state: str) -> None:
    resource, expected, _ = LABEL_STATES[state]
    health = _health(config_map["data"][MCL_HEALTH_KEY], resource)
    assert health["status"] == expected
    conditions = (resource.get("status") or {}).get("conditions") or []
    if conditions and resource["metadata"]["generation"] == resource["status"]["observedGeneration"]:
        assert health["message"] == conditions[0]["message"]


@pytest.mark.parametrize("state", list(LABEL_STATES))
def test_flux_managed_cluster_labels_health_agrees(gitops: Rendered, state: str) -> None:
    # Flux evaluates `failed`, then `current`; an expression that errors (no status yet) leaves it waiting.
    import celpy
    from celpy.adapter import json_to_cel
    from celpy.evaluation import CELEvalError

    resource, _, expected = LABEL_STATES[state]
    [check] = _of_kind(gitops, "Kustomization")["fleet-clusters"]["spec"]["healthCheckExprs"]
    environment = celpy.Environment()
    activation = {key: json_to_cel(value) for key, value in resource.items()}

    def true(expression: str) -> bool:
        try:
            return bool(environment.program(environment.compile(expression)).evaluate(activation))
        except CELEvalError:
            return False

    verdict = "failed" if true(check["failed"]) else "current" if true(check["current"]) else "waiting"
    assert verdict == expected
    others = [k for name, k in _of_kind(gitops, "Kustomization").items() if name != "fleet-clusters"]
    assert all("healthCheckExprs" not in k["spec"] for k in others)
