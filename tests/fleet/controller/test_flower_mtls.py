"""The hub's mutual TLS with real processes: the SuperLink pod and the collaborators' pods started from the very
objects the controller writes (`pods.Kubelet`), only the Kubernetes API mocked.

The test plays OCM (it signs each cluster's registration with the hub CA the controller made, and the klusterlet:
the spoke's registration Secret), the kubelet (the SuperLink Deployment's containers, each ManifestWork's
SuperNode, the allow-list ConfigMap kept in sync with the hub's), the Deployment controller and the work agents.
The controller submits and follows the run through the SuperLink's mutual-TLS port with its own certificate, the
ServerApp runs in the pod's executor with the job's, and the SuperNodes present their registration certificates.
Mid-way, OCM renews one cluster's certificate with a new key: the controller registers it and the collaborator
is replaced; the old key is refused from then on.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from fleet.controller.objects import RUNTIME_PORT
from fleet.controller.progress import FileProgress
from fleet.controller.runs import FlowerRunBackend
from fleet.federation.flower_launcher import CLIENT_CERT, CLIENT_KEY
from fleet.federation.processes import ProcessSupervisor, free_port
from fleet.hub import CLIENT_CERT_SECRET
from fleet.models import Listener, ListenerType, ModelStorage, PVCStorage, Training
from fleet.quantity import Quantity

from .conftest import job, placement_decision, resource
from .operator_support import CLUSTERS, FL, JOB, ApiServer, Hub, Operator, eventually, phase
from .pods import Kubelet, LocalPod, secret_files
from .spokes import Spoke, hub_object, sign
from .work_agent import collaborator_status

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.kmock(cls=ApiServer),
    pytest.mark.slow,
    pytest.mark.xdist_group("federation"),
]

TINY_APP = Path(__file__).resolve().parents[1] / "federation" / "tinyapp"
PLACED = CLUSTERS[:2]
CSRS = "certificates.k8s.io/v1/certificatesigningrequests"
WORKS = "work.open-cluster-management.io/v1/manifestworks"


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[ProcessSupervisor]:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.05",
        "PYTHONPATH": str(TINY_APP),
    }
    with ProcessSupervisor(tmp_path / "logs", env) as running:
        yield running


def _work(hub: Hub, cluster: str) -> dict[str, Any] | None:
    return hub_object(hub, WORKS, "fl-fl-digits-digits", cluster)


def _work_key(hub: Hub, cluster: str) -> str | None:
    work = _work(hub, cluster)
    if work is None:
        return None
    template = work["spec"]["workload"]["manifests"][1]["spec"]["template"]
    key: str | None = (template["metadata"].get("annotations") or {}).get("fleet.dev/client-key")
    return key


def _registered(hub: Hub) -> dict[str, Any]:
    import json

    text = hub.job().get("metadata", {}).get("annotations", {}).get("federation.fleet.dev/collaborators", "{}")
    found: dict[str, Any] = json.loads(text)
    return found


def _start_collaborator(kubelet: Kubelet, hub: Hub, spoke: Spoke, superlink: str) -> LocalPod:
    work = _work(hub, spoke.cluster)
    assert work is not None
    ca_map, deployment = work["spec"]["workload"]["manifests"]
    return kubelet.start(
        f"collaborator-{spoke.cluster}",
        deployment["spec"]["template"]["spec"],
        secrets={CLIENT_CERT_SECRET: spoke.secret},
        config_maps={ca_map["metadata"]["name"]: ca_map["data"]},
        claims={"fleet-data": spoke.data},
        rewrite={"hub.example:30093": superlink},  # the cluster network: the listener reaches the SuperLink
        loopback_ports=(RUNTIME_PORT,),
    )


async def test_a_mutual_tls_federation_from_the_controller_s_objects_completes_across_a_key_renewal(
    hub: Hub, tmp_path: Path, supervisor: ProcessSupervisor
) -> None:
    models = tmp_path / "models" / "digits"
    models.mkdir(parents=True)
    storage = ModelStorage(pvc=PVCStorage(name="digits-model", size=Quantity("1Gi"), path=str(models)))
    listeners = (Listener(name="server", type=ListenerType.NODE_PORT, port=30093),)
    body = resource(
        job(tls=True, rounds=2, storage=storage, listeners=listeners, training=Training(round_timeout_seconds=20))
    )
    address: list[str] = []
    backend = FlowerRunBackend(address_of=lambda _job: address[0], app=TINY_APP)
    operator = Operator(hub, backend)
    operator.controller.progress = FileProgress(Path("/"))  # the model storage is this machine's tmp_path
    kubelet = Kubelet(tmp_path / "pods", supervisor, supervisor.env)
    spokes = {c: Spoke(c, tmp_path / "spokes") for c in PLACED}
    async with operator:
        await eventually(lambda: hub_object(hub, "v1/secrets", "fleet-hub-ca"), what="the hub CA")
        for spoke in spokes.values():
            await sign(hub, spoke)
        await hub.create(FL, JOB.namespace, body)
        await eventually(lambda: hub_object(hub, "v1/secrets", "digits-superlink-tls"), what="the job's certificates")
        deployment = await eventually(lambda: hub_object(hub, "apps/v1/deployments", "digits-superlink"))
        clients = await eventually(lambda: hub_object(hub, "v1/configmaps", "digits-clients"), what="the allow-list")
        tls = hub_object(hub, "v1/secrets", "digits-superlink-tls")
        assert tls is not None
        superlink = await asyncio.to_thread(
            kubelet.start,
            "superlink",
            deployment["spec"]["template"]["spec"],
            secrets={"digits-superlink-tls": secret_files(tls)},
            config_maps={"digits-clients": clients["data"]},
            claims={"digits-model": models},
            skip=("progress",),  # the test reads progress.jsonl itself
        )
        address.append(f"127.0.0.1:{superlink.ports[9092]}")

        async def sync_allow_list() -> None:
            while True:  # the kubelet's refresh of a mounted ConfigMap
                current = hub_object(hub, "v1/configmaps", "digits-clients")
                if current is not None:
                    kubelet.update_config_map(superlink, "clients", current["data"])
                await asyncio.sleep(0.2)

        syncing = asyncio.create_task(sync_allow_list())
        try:
            await hub.patch_status("apps/v1/deployments", JOB.namespace, "digits-superlink", {"availableReplicas": 1})
            await hub.create(
                "cluster.open-cluster-management.io/v1beta1/placementdecisions",
                JOB.namespace,
                placement_decision(JOB.namespace, JOB.name, PLACED),
            )
            # The controller reaches the SuperLink only with its certificate: the keys registered show it does.
            await eventually(lambda: set(_registered(hub)) == set(PLACED), timeout=60, what="the keys registered")
            # The pod's SuperLink is a mutual-TLS one: no certificate, no answer; the controller's own, answered.
            operator_secret = hub_object(hub, "v1/secrets", "fleet-operator")
            assert operator_secret is not None
            ca_file = superlink.mounts["tls"] / "ca.crt"
            assert _health(address[0], ca_file, None, tmp_path).startswith("closed")
            assert _health(address[0], ca_file, secret_files(operator_secret), tmp_path) == "200"
            for spoke in spokes.values():
                assert _work_key(hub, spoke.cluster) == spoke.digest
                spoke.pod = await asyncio.to_thread(_start_collaborator, kubelet, hub, spoke, address[0])
            for spoke in spokes.values():
                assert spoke.pod is not None
                await eventually(
                    functools.partial(_activated, spoke.pod.processes["supernode"].log),
                    timeout=60,
                    what=f"{spoke.cluster}'s SuperNode activated",
                )

            # OCM renews eu-west-a's certificate, with a new key: its collaborator is replaced.
            renewed, old = spokes[PLACED[0]], dict(spokes[PLACED[0]].secret)
            old_node = _registered(hub)[renewed.cluster]["node"]
            await sign(hub, renewed)
            await eventually(
                lambda: _work_key(hub, renewed.cluster) == renewed.digest, what="the collaborator replaced"
            )
            await eventually(lambda: _registered(hub)[renewed.cluster]["key"] == renewed.digest, what="the new key")
            assert _registered(hub)[renewed.cluster]["node"] != old_node
            assert renewed.pod is not None
            await asyncio.to_thread(kubelet.stop, renewed.pod)
            renewed.pod = await asyncio.to_thread(_start_collaborator, kubelet, hub, renewed, address[0])
            refused = await asyncio.to_thread(_supernode_with, old, tmp_path / "old-key", address[0], superlink)
            assert refused.returncode != 0
            assert "Failed to activate SuperNode" in refused.stdout + refused.stderr, refused.stdout + refused.stderr

            for cluster in PLACED:
                work = next(w for w in hub.objects(WORKS) if w["metadata"]["namespace"] == cluster)
                await hub.patch_status(WORKS, cluster, "fl-fl-digits-digits", collaborator_status(work, 1))
            status = await eventually(
                lambda: hub.job()["status"] if phase(hub) in ("Completed", "Failed") else None,
                timeout=180,
                what="the run to finish",
            )
        finally:
            syncing.cancel()
    logs = "\n".join(p.tail(40) for p in superlink.processes.values())
    assert status["phase"] == "Completed", f"{status['message']}\n{logs}"
    assert [r["round"] for r in status["rounds"]] == [1, 2]
    assert all(r["participants"] == PLACED for r in status["rounds"]), status["rounds"]
    assert status["finalMetrics"]["files"] == 2.0  # each SuperNode read its own cluster's data


def _activated(log: Path) -> bool:
    return "SuperNode ID" in log.read_text(errors="replace")


def _health(address: str, ca: Path, client: dict[str, str] | None, folder: Path) -> str:
    """GET /health over TLS 1.3, presenting ``client`` (tls.crt, tls.key) when given: the status, or "closed"."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if client is not None:
        (folder / "client.crt").write_text(client["tls.crt"])
        (folder / "client.key").write_text(client["tls.key"])
        context.load_cert_chain(str(folder / "client.crt"), str(folder / "client.key"))
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request("GET", "/health")
        return str(connection.getresponse().status)
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected, OSError) as error:
        return f"closed: {type(error).__name__}"
    finally:
        connection.close()


def _supernode_with(secret: dict[str, str], folder: Path, address: str, superlink: LocalPod) -> Any:
    """Flower's SuperNode through the launcher with a registration the SuperLink no longer knows."""
    folder.mkdir()
    for name, text in secret.items():
        (folder / name).write_text(text)
    key = serialization.load_pem_private_key(secret["tls.key"].encode(), None)
    (folder / "auth.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    ca = superlink.mounts["tls"] / "ca.crt"
    argv = [sys.executable, "-m", "fleet.federation.flower_launcher", "supernode", "--superlink", address]
    argv += ["--port", str(free_port()), "--root-certificates", str(ca), "--auth-supernode-private-key"]
    argv += [str(folder / "auth.key"), "--max-retries", "0", "--max-wait-time", "5", "--isolation", "process"]
    env = {**os.environ, CLIENT_CERT: str(folder / "tls.crt"), CLIENT_KEY: str(folder / "tls.key")}
    env["FLWR_HOME"] = str(folder / "home")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
