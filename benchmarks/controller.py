"""Benchmark: the controller driving 100 jobs over 1,000 managed clusters on a mock Kubernetes API.

    .venv/bin/python benchmarks/controller.py [--jobs 100] [--clusters 1000] [--rounds 5] [--out FILE.md]

The API is kmock's emulator in a subprocess of its own (so the benchmark process's CPU time is the controller's
alone), holding 1,000 ManagedClusters with their dataset ClusterClaims. The benchmark plays the rest of the hub:
it creates the jobs and their PlacementDecisions (3 clusters each), reports the SuperLinks and collaborators
available (the Deployment controller and the work agents), and writes each job's progress events (the
ServerApp), while the controller runs in this process. Runs are recorded, not submitted to Flower: this measures
the controller's Kubernetes side. Phases:

1. create: every job gets its federation and 3 ManifestWorks and reaches Waiting;
2. ready: SuperLinks and collaborators report available; every job reaches Running (run submitted);
3. rounds: each round's progress event; every job records it; the last round completes every job;
4. idle: nothing changes for a while; the controller should make no request at all.

Reported per phase: API requests (all of them, counted by the server, and the controller's own), requests per
job per event, reconciles; per reconcile: CPU time of the reconcile (thread time) and wall time, p50/p95/max;
and the controller process's CPU time in all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESOURCES: dict[str, tuple[str, bool]] = {
    "federation.fleet.dev/v1alpha1/federatedlearnings": ("FederatedLearning", True),
    "apps/v1/deployments": ("Deployment", True),
    "v1/services": ("Service", True),
    "v1/secrets": ("Secret", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "v1/events": ("Event", True),
    "v1/namespaces": ("Namespace", False),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
    "route.openshift.io/v1/routes": ("Route", True),
    "networking.k8s.io/v1/ingresses": ("Ingress", True),
    "work.open-cluster-management.io/v1/manifestworks": ("ManifestWork", True),
    "cluster.open-cluster-management.io/v1beta1/placementdecisions": ("PlacementDecision", True),
    "cluster.open-cluster-management.io/v1/managedclusters": ("ManagedCluster", False),
    "certificates.k8s.io/v1/certificatesigningrequests": ("CertificateSigningRequest", False),
    "addon.open-cluster-management.io/v1alpha1/managedclusteraddons": ("ManagedClusterAddOn", True),
}
FL = "federation.fleet.dev/v1alpha1/federatedlearnings"


# --- the mock API server (subprocess) ---------------------------------------------------------------------


def serve(port: int, clusters: int) -> None:
    import kmock
    from kmock._internal import dsl

    counts: dict[str, int] = {}

    class ApiServer(kmock.KubernetesEmulator):
        """Gives created objects a uid and a name for generateName, as an API server does; counts requests
        instead of keeping them (kmock matches each request against every request kept so far: a server that
        keeps them slows down linearly, to ~150 ms a request after 500)."""

        async def _handle(self, request: kmock.Request) -> Any:
            if not str(request.url.path).startswith("/bench"):
                key = f"{request.method.value} {'watch' if request.params.get('watch') else ''}".strip()
                counts[key] = counts.get(key, 0) + 1
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                metadata = request.data.setdefault("metadata", {})
                metadata.setdefault("uid", str(uuid.uuid4()))
                metadata.setdefault("resourceVersion", "1")
                if "generateName" in metadata and "name" not in metadata:
                    metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
            try:
                return await super()._handle(request)
            finally:
                self._requests.clear()
                for reaction in self._walk(dsl.Reaction):
                    reaction._requests.clear()

    async def main() -> None:
        async with ApiServer() as server, kmock.Server(server, port=port):
            for api, (kind, namespaced) in RESOURCES.items():
                server.resources[api] = kmock.ResourceInfo(
                    kind=kind,
                    namespaced=namespaced,
                    subresources={"status"},
                    verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                )
            for i in range(clusters):
                name = f"cluster-{i:04d}"
                server.objects["cluster.open-cluster-management.io/v1/managedclusters", None, name] = {
                    "apiVersion": "cluster.open-cluster-management.io/v1",
                    "kind": "ManagedCluster",
                    "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1"},
                    "status": {
                        "clusterClaims": [
                            {"name": "digits.dataset.fleet.dev", "value": f"/data/digits/{name}"},
                            {"name": "cpu.capacity.fleet.dev", "value": "8000"},
                        ]
                    },
                }

            server["get /bench/requests"] << (lambda request: dict(counts))
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())


# --- the benchmark ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _job(index: int) -> tuple[str, str, dict[str, Any]]:
    from fleet.models import FederatedLearningSpec, Images, Job, Listener, ListenerType, ModelStorage, PVCStorage
    from fleet.quantity import Quantity

    name, namespace = f"job-{index:03d}", f"bench-{index % 10:02d}"
    job = Job(
        name=name,
        namespace=namespace,
        images=Images(server="ghcr.io/fleet-fl/fleet-app:0.1.0", client="ghcr.io/fleet-fl/fleet-app:0.1.0"),
        rounds=5,
        min_available_clients=2,
        max_clients=3,
        dataset="digits",
        storage=ModelStorage(pvc=PVCStorage(name=f"{name}-model", size=Quantity("1Gi"), path=f"/models/{name}")),
        listeners=(Listener(name="server", type=ListenerType.NODE_PORT, port=30000 + index),),
        cluster_sets=("bench",),
    )
    spec = FederatedLearningSpec.from_job(job, {"clusterSets": ["bench"]})
    body = {
        "apiVersion": "federation.fleet.dev/v1alpha1",
        "kind": "FederatedLearning",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    return name, namespace, body


class _RecordedRuns:
    def __init__(self) -> None:
        self.submitted = 0
        self.nodes = 0

    def submit(self, job: Any, spec: Any, model_dir: str, credentials: Any) -> int:
        self.submitted += 1
        return self.submitted

    def failure(self, job: Any, run_id: int, credentials: Any) -> str | None:
        return None

    def stop(self, job: Any, run_id: int, credentials: Any) -> None:
        return None

    def register(self, job: Any, cluster: str, public_key: bytes, credentials: Any) -> int:
        self.nodes += 1
        return self.nodes

    def unregister(self, job: Any, node_id: int, credentials: Any) -> None:
        return None


def _identity_records(ca: dict[str, str], clusters: int) -> list[dict[str, Any]]:
    """Each cluster's identity record, as the controller keeps it once it has seen the cluster's registration (the
    state of a hub the controller has run on): a certificate of the hub CA with the add-on's subject."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from fleet.controller.identity import expected_subject, identity_record, verify
    from fleet.federation.certificates import collaborator_subject

    ca_pem = base64.b64decode(ca["tls.crt"]).decode()
    authority = x509.load_pem_x509_certificate(ca_pem.encode())
    signer: Any = serialization.load_pem_private_key(base64.b64decode(ca["tls.key"]), None)
    now = datetime.datetime.now(datetime.UTC)
    records = []
    for i in range(clusters):
        name = f"cluster-{i:04d}"
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(collaborator_subject(name))
            .issuer_name(authority.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=24))
            .sign(signer, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        identity = verify(
            name,
            pem,
            ca_pem,
            expected_subject(name),
            requester=f"system:open-cluster-management:{name}:bench",
            source=f"{name}-csr",
            requested_at=now,
        )
        records.append(identity_record(identity, "fleet-system"))
    return records


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run_benchmark(jobs: int, clusters: int, rounds: int) -> dict[str, Any]:
    import aiohttp
    import kubernetes

    from fleet.controller.hub import HubClient
    from fleet.controller.objects import JobRef, collaborator_name, work_name
    from fleet.controller.operator import Controller, Options, run_operator
    from fleet.controller.progress import FileProgress

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--clusters", str(clusters)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError("the mock API server did not start")
    url = f"http://127.0.0.1:{port}"
    models = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    configuration = kubernetes.client.Configuration()
    configuration.host = url
    client = HubClient(kubernetes.client.ApiClient(configuration))
    runs = _RecordedRuns()
    controller = Controller(
        client, Options(interval=2.0, node_host="hub.example"), runs=runs, progress=FileProgress(models)
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    session = aiohttp.ClientSession()
    specs = [_job(i) for i in range(jobs)]
    phases: list[dict[str, Any]] = []

    async def call(method: str, path: str, body: Any = None) -> Any:
        content = "application/merge-patch+json" if method == "PATCH" else "application/json"
        async with session.request(method, url + path, json=body, headers={"Content-Type": content}) as answer:
            text = await answer.text()
            if answer.status >= 400:
                raise RuntimeError(f"{method} {path}: {answer.status} {text[:300]}")
            return json.loads(text) if text else None

    async def all_jobs() -> list[dict[str, Any]]:
        listed = await call("GET", "/apis/federation.fleet.dev/v1alpha1/federatedlearnings")
        items: list[dict[str, Any]] = listed["items"]
        return items

    async def wait_until(check: Any, what: str, timeout: float = 600) -> float:
        started = time.perf_counter()
        while not check(await all_jobs()):
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"timed out: {what}")
            await asyncio.sleep(0.25)
        return time.perf_counter() - started

    async def measure(name: str, events_per_job: int, action: Any, check: Any, settle: float = 0.0) -> None:
        server_before = await call("GET", "/bench/requests")
        own_before = client.request_count()
        outcomes_before = len(controller.outcomes)
        cpu_before = time.process_time()
        started = time.perf_counter()
        await action()
        waited = await wait_until(check, name)
        await asyncio.sleep(settle)
        elapsed = time.perf_counter() - started
        server_after = await call("GET", "/bench/requests")
        ours = list(controller.outcomes)[outcomes_before:]
        total = {k: server_after.get(k, 0) - server_before.get(k, 0) for k in server_after}
        # The benchmark's own calls (creating jobs, reporting statuses, listing jobs to wait) are not the
        # controller's: they are counted by the client below and subtracted.
        mine = benchmark_requests.pop(name, 0)
        controller_requests = sum(v for k, v in total.items() if not k.endswith("watch")) - mine
        phases.append(
            {
                "phase": name,
                "seconds": round(elapsed, 2),
                "until_done_seconds": round(waited, 2),
                "reconciles": len(ours),
                "controller_requests": controller_requests,
                "own_client_requests": client.request_count() - own_before,
                "requests_per_job_per_event": round(controller_requests / max(1, jobs * events_per_job), 2)
                if events_per_job
                else None,
                "requests_by_method": total,
                "process_cpu_seconds": round(time.process_time() - cpu_before, 2),
                "reconcile_cpu_ms_p50": round(_percentile([o.cpu_seconds for o in ours], 0.5) * 1000, 2),
                "reconcile_cpu_ms_p95": round(_percentile([o.cpu_seconds for o in ours], 0.95) * 1000, 2),
                "reconcile_cpu_ms_max": round(max((o.cpu_seconds for o in ours), default=0) * 1000, 2),
                "reconcile_wall_ms_p95": round(_percentile([o.wall_seconds for o in ours], 0.95) * 1000, 2),
                "reconcile_own_wall_ms_p95": round(
                    _percentile([o.wall_seconds - o.api_wait_seconds for o in ours], 0.95) * 1000, 2
                ),
                "requests_per_reconcile": round(statistics.fmean([o.requests for o in ours]), 2) if ours else 0,
            }
        )

    benchmark_requests: dict[str, int] = {}

    def counted(phase: str, count: int) -> None:
        benchmark_requests[phase] = benchmark_requests.get(phase, 0) + count

    operator = asyncio.create_task(run_operator(controller, stop_flag=stop, ready_flag=ready, serve_health=False))
    await asyncio.wait_for(ready.wait(), timeout=60)
    # Set-up, not measured: the clusters' identities the controller recorded from their add-on registrations.
    hub_ca = await call("GET", "/api/v1/namespaces/fleet-system/secrets/fleet-hub-ca")
    for record in _identity_records(hub_ca["data"], clusters):
        await call("POST", "/api/v1/namespaces/fleet-system/configmaps", record)
    await asyncio.sleep(3.0)  # the controller's index takes them in
    process_cpu_start = time.process_time()
    try:

        async def create() -> None:
            for i, (name, namespace, body) in enumerate(specs):
                await call(
                    "POST", f"/apis/federation.fleet.dev/v1alpha1/namespaces/{namespace}/federatedlearnings", body
                )
                decision = {
                    "apiVersion": "cluster.open-cluster-management.io/v1beta1",
                    "kind": "PlacementDecision",
                    "metadata": {
                        "name": f"{name}-decision-1",
                        "namespace": namespace,
                        "labels": {"cluster.open-cluster-management.io/placement": name},
                    },
                    "status": {
                        "decisions": [{"clusterName": f"cluster-{(3 * i + k) % clusters:04d}"} for k in range(3)]
                    },
                }
                await call(
                    "POST",
                    f"/apis/cluster.open-cluster-management.io/v1beta1/namespaces/{namespace}/placementdecisions",
                    decision,
                )
            counted("create", 2 * jobs)

        def waiting_with_works(items: list[dict[str, Any]]) -> bool:
            counted("create", 1)
            # PlacementSatisfied is written by the reconcile that applied the job's ManifestWorks.
            return len(items) == jobs and all(
                any(
                    c["type"] == "PlacementSatisfied" and c["status"] == "True"
                    for c in (i.get("status") or {}).get("conditions", [])
                )
                for i in items
            )

        await measure("create", 1, create, waiting_with_works, settle=3.0)

        async def make_ready() -> None:
            for i, (name, namespace, _) in enumerate(specs):
                ref = JobRef(name, namespace, "")
                await call(
                    "PATCH",
                    f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}-superlink/status",
                    {"status": {"availableReplicas": 1}},
                )
                for k in range(3):
                    cluster = f"cluster-{(3 * i + k) % clusters:04d}"
                    status = {
                        "conditions": [{"type": "Applied", "status": "True", "reason": "Applied", "message": ""}],
                        "resourceStatus": {
                            "manifests": [
                                {
                                    "resourceMeta": {"kind": "Deployment", "name": collaborator_name(ref)},
                                    "statusFeedback": {
                                        "values": [
                                            {
                                                "name": "AvailableReplicas",
                                                "fieldValue": {"type": "Integer", "integer": 1},
                                            }
                                        ]
                                    },
                                }
                            ]
                        },
                    }
                    await call(
                        "PATCH",
                        f"/apis/work.open-cluster-management.io/v1/namespaces/{cluster}/manifestworks/{work_name(ref)}/status",
                        {"status": status},
                    )
            counted("ready", 4 * jobs)

        def all_running(items: list[dict[str, Any]]) -> bool:
            counted("ready", 1)
            return all((i.get("status") or {}).get("phase") == "Running" for i in items)

        await measure("ready", 4, make_ready, all_running, settle=3.0)

        for number in range(1, rounds + 1):

            async def progress(n: int = number) -> None:
                for name, _, _ in specs:
                    path = models / "models" / name / "progress.jsonl"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with path.open("a", encoding="utf-8") as out:
                        event = {"event": "round", "round": n, "participants": [], "metrics": {"accuracy": 0.1 * n}}
                        out.write(json.dumps(event) + "\n")
                        if n == rounds:
                            out.write(json.dumps({"event": "completed", "metrics": {"accuracy": 0.9}}) + "\n")

            def recorded(items: list[dict[str, Any]], n: int = number) -> bool:
                counted(f"round {n}", 1)
                if n == rounds:
                    return all((i.get("status") or {}).get("phase") == "Completed" for i in items)
                return all((i.get("status") or {}).get("currentRound") == n for i in items)

            await measure(f"round {number}", 1, progress, recorded)

        async def nothing() -> None:
            await asyncio.sleep(10)

        def always(items: list[dict[str, Any]]) -> bool:
            counted("idle", 1)
            return True

        await measure("idle", 0, nothing, always)
    finally:
        process_cpu = time.process_time() - process_cpu_start
        stop.set()
        await asyncio.wait({operator}, timeout=5)
        operator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await operator
        await session.close()
        server.terminate()
        server.wait(timeout=10)
    every = list(controller.outcomes)
    return {
        "jobs": jobs,
        "clusters": clusters,
        "rounds": rounds,
        "submitted_runs": runs.submitted,
        "phases": phases,
        "reconciles": len(every),
        "reconcile_cpu_ms_p50": round(_percentile([o.cpu_seconds for o in every], 0.5) * 1000, 2),
        "reconcile_cpu_ms_p95": round(_percentile([o.cpu_seconds for o in every], 0.95) * 1000, 2),
        "reconcile_wall_ms_p95": round(_percentile([o.wall_seconds for o in every], 0.95) * 1000, 2),
        "reconcile_own_wall_ms_p95": round(
            _percentile([o.wall_seconds - o.api_wait_seconds for o in every], 0.95) * 1000, 2
        ),
        "controller_process_cpu_seconds": round(process_cpu, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


_REQUESTS_NOTE = """
What a job's requests are (no reads: the controller reads from kopf's watch-fed indices, never relisting):
create: its objects (TLS Secret, allow-list ConfigMap, model PVC, SuperLink Deployment, in-hub Service, one
listener Service, one ManifestWork per selected cluster), the status, kopf's finalizer and last-handled-configuration
patches, Events; ready: the status (Running), the run id annotation, the registered collaborators' annotation,
Events (the key registrations themselves go to the recorded SuperLink, not the API); a round: the status and one
Event; completion: one ManifestWork deletion per cluster, the SuperLink scaled to 0, the status, Events. Idle:
nothing. Before the phases (not measured), each cluster's identity record is in place, as the controller keeps it
once it has seen the cluster's add-on registration.
"""


def write_report(result: dict[str, Any], out: Path) -> None:
    lines = [
        "# Controller benchmark",
        "",
        f"`benchmarks/controller.py`: {result['jobs']} jobs, {result['clusters']} managed clusters (kmock's emulator "
        f"in a subprocess), {result['rounds']} rounds each; runs recorded, not submitted to Flower.",
        "",
        f"Machine: {_machine()}. Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| phase | seconds | reconciles | controller requests | per job per event | per reconcile | "
        "reconcile CPU p50 / p95 / max (ms) | wall p95 (ms) | wall p95 less API waits (ms) | process CPU (s) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for p in result["phases"]:
        per_event = "-" if p["requests_per_job_per_event"] is None else p["requests_per_job_per_event"]
        lines.append(
            f"| {p['phase']} | {p['seconds']} | {p['reconciles']} | {p['controller_requests']} | {per_event} | "
            f"{p['requests_per_reconcile']} | {p['reconcile_cpu_ms_p50']} / {p['reconcile_cpu_ms_p95']} / "
            f"{p['reconcile_cpu_ms_max']} | {p['reconcile_wall_ms_p95']} | {p['reconcile_own_wall_ms_p95']} | "
            f"{p['process_cpu_seconds']} |"
        )
    lines += [
        "",
        f"All phases: {result['reconciles']} reconciles; reconcile CPU p50 {result['reconcile_cpu_ms_p50']} ms, "
        f"**p95 {result['reconcile_cpu_ms_p95']} ms** (target: under 50 ms); wall p95 "
        f"{result['reconcile_wall_ms_p95']} ms, of which all but {result['reconcile_own_wall_ms_p95']} ms (p95) is "
        "waiting for the mock API server's answers; controller process CPU "
        f"{result['controller_process_cpu_seconds']} s "
        "in all (kopf's watch streams, indices and timers, and the benchmark's own client listing the jobs every "
        f"0.25 s, included); peak RSS {result['peak_rss_mib']} MiB; "
        f"{result['submitted_runs']} runs submitted (one per job).",
        "",
        "Requests by kind, per phase (server-side counts, the benchmark's own calls included; `watch` = watch "
        "streams opened):",
        "",
    ]
    for p in result["phases"]:
        lines.append(f"- {p['phase']}: {json.dumps(p['requests_by_method'], sort_keys=True)}")
    lines += _REQUESTS_NOTE.splitlines()
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(out)  # a reader never sees half a report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "controller.md")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.clusters)
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run_benchmark(args.jobs, args.clusters, args.rounds))
    print(json.dumps(result, indent=2))
    write_report(result, args.out)


if __name__ == "__main__":
    main()
