"""An OpenFL job on the hub with real OpenFL processes: the aggregator's pod and the collaborators' pods started from
the very objects the controller writes (`pods.Kubelet`, with OpenFL's environment as the images' Python), only the
Kubernetes API mocked.

The test plays OCM (it signs each cluster's registration with the hub CA the controller made), the kubelet, the
Deployment controller and the work agents. The aggregator runs OpenFL's own ``fx aggregator start`` over its mutual
TLS, with the certificate the controller issued; each collaborator presents its cluster's registration certificate
and reads its claimed data path. Before them, an impostor presents a certificate the hub CA signed in a placed
cluster's name but for another key (OCM's add-on signer signs any name for anyone): the aggregator refuses it.
The job goes Waiting -> Running -> Completed.

Lean on purpose: scikit-learn's 8x8 digits scaled to MNIST's 28x28 (what the hub's initial model is built for),
150 images per cluster, 2 rounds.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fleet.app.data import write_partition
from fleet.controller.progress import FileProgress
from fleet.controller.runs import FlowerRunBackend
from fleet.data import sklearn_digits
from fleet.federation import openfl_runtime
from fleet.federation.processes import ProcessSupervisor
from fleet.hub import CLIENT_CERT_SECRET
from fleet.models import Framework, Listener, ListenerType, ModelStorage, PVCStorage, Training
from fleet.quantity import Quantity

from .conftest import job, placement_decision, resource, sign_registration
from .operator_support import CLUSTERS, FL, JOB, ApiServer, Hub, Operator, eventually, phase
from .pods import Kubelet, LocalPod, secret_files
from .spokes import Spoke, hub_object, sign
from .work_agent import collaborator_status, served_deployment

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.kmock(cls=ApiServer),
    pytest.mark.slow,
    pytest.mark.xdist_group("openfl"),  # apart from Flower's federations: the suite runs both groups at once
]

OPENFL_PYTHON = openfl_runtime.DEFAULT_OPENFL_VENV / "bin" / "python"
PLACED = CLUSTERS[:2]
WORKS = "work.open-cluster-management.io/v1/manifestworks"


def _node_port() -> int:
    """A free port in the node-port range: the NodePort listener's, which OpenFL's plan names and its aggregator
    listens on (here every pod shares this machine's network)."""
    for port in range(31000 + os.getpid() % 1500, 32767):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise AssertionError("no free port in the node-port range")


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[ProcessSupervisor]:
    if not OPENFL_PYTHON.exists():
        pytest.skip(f"OpenFL's environment is missing ({OPENFL_PYTHON}): `make openfl-env` makes it")
    code = tmp_path / "image"
    openfl_runtime.stage_workspace_code(code)  # what the OpenFL image installs of fleet
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONNOUSERSITE": "1", "COLUMNS": "1000"}
    with ProcessSupervisor(tmp_path / "logs", env) as running:
        yield running


def _write_data(spoke: Spoke, position: int) -> None:
    digits = sklearn_digits()
    part = slice(150 * position, 150 * position + 150)
    # 8x8 -> 24x24 -> 28x28, as MNIST centres its digits in a 28x28 frame.
    images = np.pad(np.kron(digits.images[part], np.ones((3, 3), dtype=np.uint8)), ((0, 0), (2, 2), (2, 2)))
    folder = spoke.data / "digits" / spoke.cluster
    for stale in folder.iterdir():
        stale.unlink()
    write_partition(folder / "part.npz", images.astype(np.uint8), digits.labels[part])


def _start_collaborator(kubelet: Kubelet, hub: Hub, spoke: Spoke, secret: dict[str, str], name: str) -> LocalPod:
    work = hub_object(hub, WORKS, "fl-fl-digits-digits", spoke.cluster)
    assert work is not None
    ca, plan, deployment = work["spec"]["workload"]["manifests"]
    files = dict(plan["data"])
    # The spoke's data volume is mounted at /data in the pod; here it is the spoke's folder.
    files["data.yaml"] = files["data.yaml"].replace(",/data/", f",{spoke.data}/")
    return kubelet.start(
        name,
        deployment["spec"]["template"]["spec"],
        secrets={CLIENT_CERT_SECRET: secret},
        config_maps={ca["metadata"]["name"]: ca["data"], plan["metadata"]["name"]: files},
        claims={"fleet-data": spoke.data},
        python=str(OPENFL_PYTHON),
    )


def _log(pod: LocalPod, container: str) -> str:
    """A container's log with its whitespace collapsed (OpenFL's rich console wraps long lines)."""
    return " ".join(pod.processes[container].log.read_text(errors="replace").split())


async def test_an_openfl_job_runs_on_the_hub_over_mutual_tls_refuses_an_impostor_and_completes(
    hub: Hub, tmp_path: Path, supervisor: ProcessSupervisor
) -> None:
    models = tmp_path / "models" / "digits"
    models.mkdir(parents=True)
    port = _node_port()
    storage = ModelStorage(pvc=PVCStorage(name="digits-model", size=Quantity("1Gi"), path=str(models)))
    body = resource(
        job(
            framework=Framework.OPENFL,
            rounds=2,
            storage=storage,
            listeners=(Listener(name="server", type=ListenerType.NODE_PORT, port=port),),
            training=Training(round_timeout_seconds=60, batch_size=16),
        )
    )
    # A Flower backend for Flower jobs; this job's runs are OpenFL's (`fleet.runtimes.openfl`).
    operator = Operator(hub, FlowerRunBackend(), node_host="127.0.0.1")
    operator.controller.progress = FileProgress(Path("/"))  # the model storage is this machine's tmp_path
    kubelet = Kubelet(tmp_path / "pods", supervisor, supervisor.env)
    spokes = {c: Spoke(c, tmp_path / "spokes") for c in PLACED}
    for position, spoke in enumerate(spokes.values()):
        _write_data(spoke, position)
    pods: list[LocalPod] = []
    async with operator:
        await eventually(lambda: hub_object(hub, "v1/secrets", "fleet-hub-ca"), what="the hub CA")
        for spoke in spokes.values():
            await sign(hub, spoke)
        await hub.create(FL, JOB.namespace, body)
        await hub.create(
            "cluster.open-cluster-management.io/v1beta1/placementdecisions",
            JOB.namespace,
            placement_decision(JOB.namespace, JOB.name, PLACED),
        )

        def keys_listed() -> bool:
            keys = hub_object(hub, "v1/configmaps", "digits-aggregator-keys")
            return keys is not None and all(s.digest in keys["data"]["allowed-keys.json"] for s in spokes.values())

        await eventually(keys_listed, timeout=60, what="the collaborators' keys listed for the aggregator")
        await eventually(lambda: len(hub.objects(WORKS)) == len(PLACED), what="the collaborators' ManifestWorks")
        await eventually(lambda: phase(hub) == "Waiting", what="Waiting for the collaborators")
        deployment = hub_object(hub, "apps/v1/deployments", "digits-aggregator")
        plan = hub_object(hub, "v1/configmaps", "digits-aggregator-plan")
        keys = hub_object(hub, "v1/configmaps", "digits-aggregator-keys")
        tls = hub_object(hub, "v1/secrets", "digits-aggregator-tls")
        assert deployment is not None and plan is not None and keys is not None and tls is not None
        aggregator = await asyncio.to_thread(
            functools.partial(
                kubelet.start,
                "aggregator",
                deployment["spec"]["template"]["spec"],
                secrets={"digits-aggregator-tls": secret_files(tls)},
                config_maps={"digits-aggregator-plan": plan["data"], "digits-aggregator-keys": keys["data"]},
                claims={"digits-model": models},
                skip=("progress",),  # the test reads progress.jsonl itself
                python=str(OPENFL_PYTHON),
                init_timeout=240,
            )
        )
        pods.append(aggregator)
        try:
            await eventually(lambda: _listening(port), timeout=120, what="the aggregator listening")
            status = served_deployment(deployment, available=1)["status"]
            await hub.patch_status("apps/v1/deployments", JOB.namespace, "digits-aggregator", status)

            # An impostor: a certificate the hub CA signed in eu-west-a's name, for a key the hub never vouched for.
            ca = hub_object(hub, "v1/secrets", "fleet-hub-ca")
            assert ca is not None
            ca_files = secret_files(ca)
            impostor = Spoke(PLACED[0], tmp_path / "impostor")
            impostor.hold(*sign_registration(ca_files["tls.crt"], ca_files["tls.key"], PLACED[0]))
            assert impostor.digest != spokes[PLACED[0]].digest
            _write_data(impostor, 5)
            fake = await asyncio.to_thread(_start_collaborator, kubelet, hub, impostor, impostor.secret, "impostor")
            pods.append(fake)
            refusal = f"its certificate's key {impostor.digest} is not one the hub registered"
            await eventually(lambda: refusal in _log(aggregator, "aggregator"), timeout=90, what="the impostor refused")
            assert "UNAUTHENTICATED" in _log(fake, "collaborator")
            kubelet.stop(fake)

            for spoke in spokes.values():
                pods.append(
                    await asyncio.to_thread(
                        _start_collaborator, kubelet, hub, spoke, spoke.secret, f"collaborator-{spoke.cluster}"
                    )
                )
                work = hub_object(hub, WORKS, "fl-fl-digits-digits", spoke.cluster)
                assert work is not None
                await hub.patch_status(WORKS, spoke.cluster, "fl-fl-digits-digits", collaborator_status(work, 1))
            await eventually(lambda: phase(hub) in ("Running", "Completed"), timeout=60, what="Running")
            final = await eventually(
                lambda: hub.job()["status"] if phase(hub) in ("Completed", "Failed") else None,
                timeout=300,
                what="the run to finish",
            )
        finally:
            for pod in pods:
                kubelet.stop(pod)
    logs = "\n".join(p.tail(30) for pod in pods for p in pod.processes.values())
    assert final["phase"] == "Completed", f"{final['message']}\n{logs}"
    assert [r["round"] for r in final["rounds"]] == [1, 2]
    assert all(r["participants"] == PLACED for r in final["rounds"]), final["rounds"]
    assert final["modelPath"] == f"{models}/model.pt" and (models / "model.pt").is_file()
    assert 0.0 <= final["finalMetrics"]["accuracy"] <= 1.0
    assert not hub.objects(WORKS)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
