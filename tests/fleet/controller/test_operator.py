"""The running operator against an HTTP mock of the Kubernetes API (kmock) serving the project's CRD and OCM kinds.

The test plays everyone else on the hub: the user creating the job, OCM's Placement controller (PlacementDecisions),
the work agents (ManifestWork status feedback), the Deployment controller (the SuperLink's available replicas),
and the ServerApp (progress events in ``progress.jsonl`` under the job's model storage, mapped into a temporary
folder). The Flower run submission is recorded, not performed (`_RecordedRuns`); the real Flower side is
exercised by ``fleet run``'s own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kubernetes
import pytest
import pytest_asyncio

from fleet.controller.hub import HubClient
from fleet.controller.objects import JobRef, collaborator_name, work_name
from fleet.controller.operator import Controller, Options, run_operator
from fleet.controller.progress import FileProgress
from fleet.models import FederatedLearningSpec
from fleet.validation import validate_documents

from .conftest import managed_cluster, placement_decision, resource, work_status


class _ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator, giving each created object a uid and a resourceVersion as an API server does (kopf keys
    its indices by namespace, name and uid: without uids, a Service and a Deployment of one name collide), and
    a name to objects created with generateName (Events)."""

    async def _handle(self, request: kmock.Request) -> Any:
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            metadata.setdefault("uid", str(uuid.uuid4()))
            if "generateName" in metadata and "name" not in metadata:
                metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
            metadata.setdefault("resourceVersion", "1")
        return await super()._handle(request)


pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=_ApiServer)]

FL = "federation.fleet.dev/v1alpha1/federatedlearnings"
RESOURCES: dict[str, dict[str, Any]] = {
    FL: {"kind": "FederatedLearning", "namespaced": True, "subresources": ["status"]},
    "apps/v1/deployments": {"kind": "Deployment", "namespaced": True, "subresources": ["status"]},
    "v1/services": {"kind": "Service", "namespaced": True, "subresources": ["status"]},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/persistentvolumeclaims": {"kind": "PersistentVolumeClaim", "namespaced": True},
    "v1/events": {"kind": "Event", "namespaced": True},
    # What kopf itself looks for before it watches anything.
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {"kind": "CustomResourceDefinition", "namespaced": False},
    "route.openshift.io/v1/routes": {"kind": "Route", "namespaced": True},
    "networking.k8s.io/v1/ingresses": {"kind": "Ingress", "namespaced": True},
    "work.open-cluster-management.io/v1/manifestworks": {
        "kind": "ManifestWork",
        "namespaced": True,
        "subresources": ["status"],
    },
    "cluster.open-cluster-management.io/v1beta1/placementdecisions": {
        "kind": "PlacementDecision",
        "namespaced": True,
        "subresources": ["status"],
    },
    "cluster.open-cluster-management.io/v1/managedclusters": {
        "kind": "ManagedCluster",
        "namespaced": False,
        "subresources": ["status"],
    },
}
_LAST_HUB: list[Hub] = []
CLUSTERS = ["eu-west-a", "eu-west-b", "eu-central-c"]
JOB = JobRef("digits", "fl-digits", "uid-1")
OWNED_PATHS = (
    "apps/v1/deployments",
    "v1/services",
    "v1/secrets",
    "v1/persistentvolumeclaims",
    "route.openshift.io/v1/routes",
    "networking.k8s.io/v1/ingresses",
    "work.open-cluster-management.io/v1/manifestworks",
)


@dataclass
class _RecordedRuns:
    """Records submissions; the test then writes the ServerApp's progress events."""

    submitted: list[tuple[str, str, int]] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)

    def submit(self, job: JobRef, spec: FederatedLearningSpec, model_dir: str, ca_pem: str | None) -> int:
        assert ca_pem is not None and "BEGIN CERTIFICATE" in ca_pem
        self.submitted.append((job.namespace, job.name, spec.server.rounds))
        return 40 + len(self.submitted)

    def failure(self, job: JobRef, run_id: int, ca_pem: str | None) -> str | None:
        return None

    def stop(self, job: JobRef, run_id: int, ca_pem: str | None) -> None:
        self.stopped.append(run_id)


class Hub:
    """The mock API server, seen as the rest of the hub would use it."""

    def __init__(self, server: kmock.KubernetesEmulator, tmp: Path) -> None:
        self.server = server
        self.url = str(server.servers[0].url).rstrip("/")
        self.models = tmp / "models-root"
        self.session = aiohttp.ClientSession()

    async def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as answer:
            text = await answer.text()
            assert answer.status < 400, f"{method} {path}: {answer.status} {text}"
            return json.loads(text) if text else {}

    async def create(self, api: str, namespace: str | None, obj: dict[str, Any]) -> None:
        await self.request("POST", _collection(api, namespace), obj)

    async def patch_status(self, api: str, namespace: str | None, name: str, status: dict[str, Any]) -> None:
        await self.request("PATCH", _collection(api, namespace) + f"/{name}/status", {"status": status})

    def objects(self, api: str) -> list[dict[str, Any]]:
        found = []
        for key in list(self.server.objects):
            res, _namespace, _name = key
            obj = self.server.objects[key]
            if res == api and not obj.deleted:
                found.append(dict(obj.raw))
        return found

    def job(self) -> dict[str, Any]:
        jobs = [o for o in self.objects(FL) if o["metadata"]["name"] == JOB.name]
        return jobs[0] if jobs else {}

    def progress(self, *events: dict[str, Any]) -> None:
        path = self.models / "models" / "digits" / "progress.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.writelines(json.dumps(e) + "\n" for e in events)

    def requests(self, method: str, path_part: str) -> int:
        return sum(1 for r in self.server if r.method == kmock.method(method) and path_part in str(r.url))

    def event_reasons(self) -> list[str]:
        """The reasons of the Events posted (kmock keeps the requests; generated names are not stored apart)."""
        return [
            str(r.data.get("reason"))
            for r in self.server
            if r.method == kmock.method.POST and "/events" in str(r.url) and isinstance(r.data, dict)
        ]


def _collection(api: str, namespace: str | None) -> str:
    group_version, plural = api.rsplit("/", 1)
    base = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


@pytest_asyncio.fixture
async def hub(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> AsyncIterator[Hub]:
    for api, info in RESOURCES.items():
        kmock.resources[api] = kmock.ResourceInfo(
            kind=info["kind"],
            namespaced=info["namespaced"],
            subresources=set(info.get("subresources", [])),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
    for name in CLUSTERS:
        await _seed(kmock, "cluster.open-cluster-management.io/v1/managedclusters", None, managed_cluster(name))
    the_hub = Hub(kmock, tmp_path)
    _LAST_HUB[:] = [the_hub]
    yield the_hub
    await the_hub.session.close()


async def _seed(server: kmock.KubernetesEmulator, api: str, namespace: str | None, obj: dict[str, Any]) -> None:
    url = str(server.servers[0].url).rstrip("/") + _collection(api, namespace)
    async with aiohttp.ClientSession() as session, session.post(url, json=obj) as answer:
        assert answer.status < 400, await answer.text()


class Operator:
    def __init__(self, hub: Hub, runs: _RecordedRuns) -> None:
        configuration = kubernetes.client.Configuration()
        configuration.host = hub.url
        self.client = HubClient(kubernetes.client.ApiClient(configuration))
        self.controller = Controller(
            self.client,
            Options(interval=0.2, node_host="hub.example", exit_timeout=0.2),
            runs=runs,
            progress=FileProgress(hub.models),
        )
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Operator:
        self.task = asyncio.create_task(
            run_operator(self.controller, stop_flag=self.stop, ready_flag=self.ready, serve_health=False)
        )
        await asyncio.wait_for(self.ready.wait(), timeout=10)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        assert self.task is not None
        # kopf stops its own tasks at once, then gives tasks born meanwhile (here: the mock server's request
        # handlers) 5 s to end: not the operator's to wait for in a test.
        await asyncio.wait({self.task}, timeout=1.5)
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = check()
        except (KeyError, IndexError, AssertionError):
            result = None
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}; {_LAST_HUB[0].job() if _LAST_HUB else ''}")
        await asyncio.sleep(0.05)


def _phase(hub: Hub) -> str:
    return str(hub.job().get("status", {}).get("phase", ""))


async def _make_ready(hub: Hub, clusters: list[str]) -> None:
    """The hub's Deployment controller and the spokes' work agents report the federation up."""
    await hub.patch_status("apps/v1/deployments", JOB.namespace, "digits-superlink", {"availableReplicas": 1})
    name = collaborator_name(JOB)
    for cluster in clusters:
        await hub.patch_status(
            "work.open-cluster-management.io/v1/manifestworks",
            cluster,
            work_name(JOB),
            work_status("fleet-collaborator", name, 1),
        )


def _job(**spec: Any) -> dict[str, Any]:
    """The job's FederatedLearning resource, with changes to its spec."""
    job = resource()
    job["spec"].update(spec)
    return job


async def _start_job(hub: Hub) -> None:
    await hub.create(FL, JOB.namespace, _job())
    await eventually(lambda: hub.objects("apps/v1/deployments"), what="the SuperLink Deployment")
    await hub.create(
        "cluster.open-cluster-management.io/v1beta1/placementdecisions",
        JOB.namespace,
        placement_decision(JOB.namespace, JOB.name, CLUSTERS),
    )
    await eventually(
        lambda: len(hub.objects("work.open-cluster-management.io/v1/manifestworks")) == 3, what="3 ManifestWorks"
    )


async def test_a_job_goes_waiting_running_completed_round_by_round(hub: Hub, crds_dir: Path) -> None:
    runs = _RecordedRuns()
    async with Operator(hub, runs):
        await _start_job(hub)
        assert _phase(hub) == "Waiting"
        await _make_ready(hub, CLUSTERS[:2])
        await eventually(lambda: _phase(hub) == "Running", what="Running")
        assert runs.submitted == [("fl-digits", "digits", 3)]
        assert hub.job()["metadata"]["annotations"]["federation.fleet.dev/run-id"] == "41"

        seen_rounds = []
        for number in (1, 2, 3):
            hub.progress(
                {
                    "event": "round",
                    "round": number,
                    "participants": CLUSTERS[:2],
                    "metrics": {"accuracy": 0.5 + number / 10},
                    "time": f"2026-01-01T00:0{number}:00Z",
                }
            )

            def at_round(n: int = number) -> dict[str, Any] | None:
                status: dict[str, Any] = hub.job()["status"]
                return status if status.get("currentRound") == n else None

            status = await eventually(at_round, what=f"round {number}")
            seen_rounds.append([r["round"] for r in status["rounds"]])
        assert seen_rounds == [[1], [1, 2], [1, 2, 3]]
        hub.progress({"event": "completed", "metrics": {"accuracy": 0.93}})
        await eventually(lambda: _phase(hub) == "Completed", what="Completed")
        status = hub.job()["status"]
        assert status["modelPath"] == "/models/digits/model.pt"
        assert status["finalMetrics"] == {"accuracy": 0.93}
        await eventually(lambda: not hub.objects("work.open-cluster-management.io/v1/manifestworks"))
        superlink = hub.objects("apps/v1/deployments")[0]
        assert superlink["spec"]["replicas"] == 0
        await eventually(lambda: {"Running", "RoundCompleted", "Completed"} <= set(hub.event_reasons()), what="Events")
        assert len(runs.submitted) == 1

    # Everything the controller wrote validates against the upstream CRDs and Kubernetes' schemas.
    from render.charts.controller import federated_learning_crd_spec

    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "federatedlearnings.federation.fleet.dev"},
        "spec": federated_learning_crd_spec(),
    }
    documents: list[tuple[str, dict[str, Any]]] = [("crd", crd), ("job", _without_server_fields(hub.job()))]
    for api in OWNED_PATHS:
        documents += [(api, _without_server_fields(o)) for o in hub.objects(api)]
    report = validate_documents(documents, crds_dir, kubeconform=False)
    assert report.ok, "\n".join(report.lines())


def _without_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    obj.pop("status", None) if obj.get("kind") != "FederatedLearning" else None
    return obj


async def test_transient_409_and_500_answers_never_fail_the_job(hub: Hub) -> None:
    runs = _RecordedRuns()
    # The first creation of the SuperLink answers 500 (after storing it, as a server failing late would), the
    # first status write 409, the first ManifestWork creation 503.
    hub.server["post", "/apis/apps/v1/namespaces/fl-digits/deployments"][:1] << 500
    (
        hub.server[
            "patch", "/apis/federation.fleet.dev/v1alpha1/namespaces/fl-digits/federatedlearnings/digits/status"
        ][:1]
        << 409
    )
    hub.server["post", "/apis/work.open-cluster-management.io/v1/namespaces/eu-west-a/manifestworks"][:1] << 503
    async with Operator(hub, runs) as operator:
        await _start_job(hub)
        await _make_ready(hub, CLUSTERS)
        await eventually(lambda: _phase(hub) == "Running", what="Running despite the errors")
        hub.progress({"event": "round", "round": 1, "participants": CLUSTERS, "metrics": {}, "time": None})
        hub.progress({"event": "completed", "metrics": {"accuracy": 0.9}})
        await eventually(lambda: _phase(hub) == "Completed", what="Completed despite the errors")
        errors = operator.controller.metrics.reconcile_errors.labels("transient")._value.get()
    assert errors >= 3  # each injected error was met, and retried
    assert len(hub.objects("apps/v1/deployments")) == 1
    assert runs.submitted == [("fl-digits", "digits", 3)]


async def test_deleting_the_job_removes_everything_on_hub_and_spokes(hub: Hub) -> None:
    runs = _RecordedRuns()
    async with Operator(hub, runs):
        await _start_job(hub)
        await _make_ready(hub, CLUSTERS)
        await eventually(lambda: _phase(hub) == "Running")
        assert hub.job()["metadata"]["finalizers"] == ["federation.fleet.dev/cleanup"]
        await hub.request("DELETE", _collection(FL, JOB.namespace) + "/digits")
        await eventually(lambda: not hub.job(), what="the job gone")
        for api in OWNED_PATHS:
            left = [o for o in hub.objects(api) if o["metadata"]["name"] != "fleet-hub-ca"]  # the hub's, shared
            assert not left, f"{api} left behind"
        assert runs.stopped == [41]


async def test_a_restart_mid_job_creates_no_duplicates_and_does_not_resubmit(hub: Hub) -> None:
    runs = _RecordedRuns()
    async with Operator(hub, runs):
        await _start_job(hub)
        await _make_ready(hub, CLUSTERS)
        await eventually(lambda: _phase(hub) == "Running")
        hub.progress({"event": "round", "round": 1, "participants": CLUSTERS, "metrics": {}, "time": None})
        await eventually(lambda: hub.job()["status"].get("currentRound") == 1)
    creations = hub.requests("POST", "/namespaces/")
    async with Operator(hub, runs):
        hub.progress({"event": "round", "round": 2, "participants": CLUSTERS, "metrics": {}, "time": None})
        await eventually(lambda: hub.job()["status"].get("currentRound") == 2, what="round 2 after the restart")
        await asyncio.sleep(0.5)  # several timer reconciles
        assert [r["round"] for r in hub.job()["status"]["rounds"]] == [1, 2]
    new_posts = hub.requests("POST", "/namespaces/") - creations
    events_posted = hub.requests("POST", "/events")
    assert new_posts <= events_posted, "the restarted controller created objects again"
    assert len(runs.submitted) == 1
    assert len(hub.objects("work.open-cluster-management.io/v1/manifestworks")) == 3


async def test_too_few_clusters_past_the_timeout_fails_with_a_reason(hub: Hub) -> None:
    runs = _RecordedRuns()
    async with Operator(hub, runs):
        await hub.create(FL, JOB.namespace, _job(waitTimeoutSeconds=1))
        await hub.create(
            "cluster.open-cluster-management.io/v1beta1/placementdecisions",
            JOB.namespace,
            placement_decision(JOB.namespace, JOB.name, CLUSTERS[:1]),
        )
        await eventually(lambda: _phase(hub) == "Failed", timeout=10, what="Failed")
        status = hub.job()["status"]
        succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
        assert succeeded["reason"] == "TooFewClusters"
        assert "minAvailableClients" in status["message"]
        assert not runs.submitted
        finished = datetime.datetime.fromisoformat(status["finishedAt"].replace("Z", "+00:00"))
        assert finished.tzinfo is not None
