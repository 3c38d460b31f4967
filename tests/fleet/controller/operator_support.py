"""The operator tests' hub: kmock's emulator made API-server-like, the rest of the hub played by the test, and
the operator run in the test's event loop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kubernetes

from fleet.controller.hub import Credentials, HubClient
from fleet.controller.objects import JobRef, work_name
from fleet.controller.operator import Controller, Options, run_operator
from fleet.controller.progress import FileProgress
from fleet.controller.runs import KeyRetiredError, RunBackend
from fleet.models import FederatedLearningSpec

from .conftest import placement_decision, registration_csr, resource, sign_registration
from .work_agent import collaborator_status, served_deployment


class ApiServer(kmock.KubernetesEmulator):
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


FL = "federation.fleet.dev/v1alpha1/federatedlearnings"
RESOURCES: dict[str, dict[str, Any]] = {
    FL: {"kind": "FederatedLearning", "namespaced": True, "subresources": ["status"]},
    "apps/v1/deployments": {"kind": "Deployment", "namespaced": True, "subresources": ["status"]},
    "v1/services": {"kind": "Service", "namespaced": True, "subresources": ["status"]},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
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
    "addon.open-cluster-management.io/v1alpha1/managedclusteraddons": {
        "kind": "ManagedClusterAddOn",
        "namespaced": True,
        "subresources": ["status"],
    },
    "certificates.k8s.io/v1/certificatesigningrequests": {
        "kind": "CertificateSigningRequest",
        "namespaced": False,
        "subresources": ["status"],
    },
}
LAST_HUB: list[Hub] = []
CLUSTERS = ["eu-west-a", "eu-west-b", "eu-central-c"]
JOB = JobRef("digits", "fl-digits", "uid-1")
OWNED_PATHS = (
    "apps/v1/deployments",
    "v1/services",
    "v1/secrets",
    "v1/configmaps",
    "v1/persistentvolumeclaims",
    "route.openshift.io/v1/routes",
    "networking.k8s.io/v1/ingresses",
    "work.open-cluster-management.io/v1/manifestworks",
)


@dataclass
class RecordedRuns:
    """Records submissions and the SuperLink's node registry, as Flower keeps it (a key is registered once,
    ever: `KeyRetiredError` after it was unregistered); the test writes the ServerApp's progress events."""

    submitted: list[tuple[str, str, int]] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    registered: list[tuple[str, bytes]] = field(default_factory=list)
    unregistered: list[int] = field(default_factory=list)
    nodes: dict[bytes, tuple[int, str]] = field(default_factory=dict)
    """Public key -> (node id, registered or unregistered)."""
    presented: set[str] = field(default_factory=set)
    """The common names of the client certificates the controller presented."""

    def submit(self, job: JobRef, spec: FederatedLearningSpec, model_dir: str, credentials: Credentials | None) -> int:
        self._check(credentials)
        self.submitted.append((job.namespace, job.name, spec.server.rounds))
        return 40 + len(self.submitted)

    def failure(self, job: JobRef, run_id: int, credentials: Credentials | None) -> str | None:
        self._check(credentials)
        return None

    def stop(self, job: JobRef, run_id: int, credentials: Credentials | None) -> None:
        self._check(credentials)
        self.stopped.append(run_id)

    def register(self, job: JobRef, cluster: str, public_key: bytes, credentials: Credentials) -> int:
        self._check(credentials)
        known = self.nodes.get(public_key)
        if known is not None:
            if known[1] == "unregistered":
                raise KeyRetiredError(f"cluster {cluster}'s key was unregistered (node {known[0]})")
            return known[0]
        node = 1000 + len(self.nodes)
        self.nodes[public_key] = (node, "registered")
        self.registered.append((cluster, public_key))
        return node

    def unregister(self, job: JobRef, node_id: int, credentials: Credentials) -> None:
        self._check(credentials)
        key = next(k for k, (n, _) in self.nodes.items() if n == node_id)
        self.nodes[key] = (node_id, "unregistered")
        self.unregistered.append(node_id)

    def live_keys(self) -> dict[int, bytes]:
        return {n: k for k, (n, status) in self.nodes.items() if status != "unregistered"}

    def _check(self, credentials: Credentials | None) -> None:
        """What a mutual-TLS SuperLink checks of the controller: a client certificate of the hub CA."""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        assert credentials is not None, "the controller presented no client certificate"
        certificate = x509.load_pem_x509_certificate(credentials.certificate.encode())
        certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(credentials.ca.encode()))
        self.presented |= {str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}


class Hub:
    """The mock API server, seen as the rest of the hub would use it."""

    def __init__(self, server: kmock.KubernetesEmulator, tmp: Path) -> None:
        self.server = server
        self.url = str(server.servers[0].url).rstrip("/")
        self.models = tmp / "models-root"
        # A new connection per request: kopf's shutdown cancels the mock server's handlers, which would leave a
        # pooled connection dead for the test's next request after an operator stops.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as answer:
            text = await answer.text()
            assert answer.status < 400, f"{method} {path}: {answer.status} {text}"
            return json.loads(text) if text else {}

    async def create(self, api: str, namespace: str | None, obj: dict[str, Any]) -> None:
        await self.request("POST", collection(api, namespace), obj)

    async def patch_status(self, api: str, namespace: str | None, name: str, status: dict[str, Any]) -> None:
        await self.request("PATCH", collection(api, namespace) + f"/{name}/status", {"status": status})

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


def collection(api: str, namespace: str | None) -> str:
    group_version, plural = api.rsplit("/", 1)
    base = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


async def seed(server: kmock.KubernetesEmulator, api: str, namespace: str | None, obj: dict[str, Any]) -> None:
    url = str(server.servers[0].url).rstrip("/") + collection(api, namespace)
    async with aiohttp.ClientSession() as session, session.post(url, json=obj) as answer:
        assert answer.status < 400, await answer.text()


class Operator:
    def __init__(
        self,
        hub: Hub,
        runs: RunBackend,
        clock: Callable[[], datetime.datetime] | None = None,
        node_host: str = "hub.example",
    ) -> None:
        configuration = kubernetes.client.Configuration()
        configuration.host = hub.url
        self.client = HubClient(kubernetes.client.ApiClient(configuration))
        self.controller = Controller(
            self.client,
            Options(interval=0.2, node_host=node_host, exit_timeout=0.2),
            runs=runs,
            progress=FileProgress(hub.models),
            clock=clock or (lambda: datetime.datetime.now(datetime.UTC)),
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


async def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = check()
        except (KeyError, IndexError, AssertionError):
            result = None
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}; {LAST_HUB[0].job() if LAST_HUB else ''}")
        await asyncio.sleep(0.05)


def phase(hub: Hub) -> str:
    return str(hub.job().get("status", {}).get("phase", ""))


async def make_ready(hub: Hub, clusters: list[str]) -> None:
    """The hub's Deployment controller and the spokes' work agents report the federation up: the SuperLink's
    status as the Deployment controller writes it, each collaborator ManifestWork's as the work agent reports it
    from its own feedback rules over the SuperNode Deployment the spoke serves."""
    superlink = next(d for d in hub.objects("apps/v1/deployments") if d["metadata"]["name"] == "digits-superlink")
    status = served_deployment(superlink, available=1)["status"]
    await hub.patch_status("apps/v1/deployments", JOB.namespace, "digits-superlink", status)
    works = "work.open-cluster-management.io/v1/manifestworks"
    for cluster in clusters:
        work = next(
            w
            for w in hub.objects(works)
            if w["metadata"]["namespace"] == cluster and w["metadata"]["name"] == work_name(JOB)
        )
        await hub.patch_status(works, cluster, work_name(JOB), collaborator_status(work, 1))


def job_resource(**spec: Any) -> dict[str, Any]:
    """The job's FederatedLearning resource, with changes to its spec."""
    job = resource()
    job["spec"].update(spec)
    return job


async def register_identities(hub: Hub, clusters: list[str]) -> None:
    """OCM signs each cluster's add-on registration (its CSR appears on the hub) and the controller records it."""
    await eventually(lambda: any(s["metadata"]["name"] == "fleet-hub-ca" for s in hub.objects("v1/secrets")))
    ca = next(s for s in hub.objects("v1/secrets") if s["metadata"]["name"] == "fleet-hub-ca")["data"]
    pems = (base64.b64decode(ca["tls.crt"]).decode(), base64.b64decode(ca["tls.key"]).decode())
    for cluster in clusters:
        certificate, _ = sign_registration(*pems, cluster)
        await hub.create(
            "certificates.k8s.io/v1/certificatesigningrequests", None, registration_csr(certificate, cluster)
        )

    def recorded() -> bool:
        names = {o["metadata"]["name"] for o in hub.objects("v1/configmaps")}
        return all(f"fleet-identity-{c}" in names for c in clusters)

    await eventually(recorded, what="the identities recorded")


async def start_job(hub: Hub, *, identities: bool = True) -> None:
    """The job created and placed on `CLUSTERS`; ``identities``: their registrations signed first."""
    if identities:
        await register_identities(hub, CLUSTERS)
    await hub.create(FL, JOB.namespace, job_resource())
    await eventually(lambda: hub.objects("apps/v1/deployments"), what="the SuperLink Deployment")
    await hub.create(
        "cluster.open-cluster-management.io/v1beta1/placementdecisions",
        JOB.namespace,
        placement_decision(JOB.namespace, JOB.name, CLUSTERS),
    )
    await eventually(
        lambda: len(hub.objects("work.open-cluster-management.io/v1/manifestworks")) == 3, what="3 ManifestWorks"
    )
