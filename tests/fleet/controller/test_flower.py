"""The operator with the Flower side real: a local SuperLink and two SuperNodes, only the Kubernetes API mocked.

The test starts what the job's SuperLink Deployment and the collaborators' ManifestWorks would start on a hub and
its spokes (`flower-superlink`, `flower-supernode` with each cluster's data path in its node config), reports
them available as the Deployment controller and the work agents would, and lets the controller submit the run
with `flwr run` and follow the ServerApp's progress.jsonl to Completed. The app is the federation tests' tiny
Flower app (no torch), so the run takes seconds; the job runs without TLS (TLS and SuperNode authentication of a
local federation are `fleet run`'s tests).
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.controller.progress import FileProgress
from fleet.controller.runs import FlowerRunBackend
from fleet.federation.processes import ProcessSupervisor, free_port
from fleet.models import ModelStorage, PVCStorage, Training
from fleet.quantity import Quantity

from .conftest import job, placement_decision, resource
from .operator_support import CLUSTERS, FL, ApiServer, Hub, Operator, eventually, make_ready, phase

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.kmock(cls=ApiServer),
    pytest.mark.slow,
    pytest.mark.xdist_group("federation"),
]

TINY_APP = Path(__file__).resolve().parents[1] / "federation" / "tinyapp"


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[str]:
    """A SuperLink and one SuperNode for each of the first two clusters; the SuperLink's address."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(tmp_path / "flwr-home"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.05",
        "PYTHONPATH": str(TINY_APP),
    }
    port = free_port()
    address = f"127.0.0.1:{port}"
    with ProcessSupervisor(tmp_path / "logs", env) as supervisor:
        supervisor.start(
            "superlink",
            [str(bin_dir / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
             "--disable-runtime-dependency-installation"],
        )  # fmt: skip
        deadline = time.monotonic() + 40
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "logs" / "superlink.log").read_text()[-2000:]
            time.sleep(0.2)
        for cluster in CLUSTERS[:2]:
            data = tmp_path / "data" / cluster
            data.mkdir(parents=True)
            (data / "part.npz").write_bytes(b"x")
            supervisor.start(
                f"supernode-{cluster}",
                [str(bin_dir / "flower-supernode"), "--insecure", "--superlink", address,
                 "--port", str(free_port()),
                 "--node-config", f'data-path="{data}" cluster-name="{cluster}"'],
            )  # fmt: skip
        yield address


async def test_a_real_flower_run_goes_waiting_running_completed(hub: Hub, tmp_path: Path, federation: str) -> None:
    models = tmp_path / "models" / "digits"
    storage = ModelStorage(pvc=PVCStorage(name="digits-model", size=Quantity("1Gi"), path=str(models)))
    body = resource(job(tls=False, rounds=2, storage=storage, training=Training(round_timeout_seconds=20)))
    operator = Operator(hub, FlowerRunBackend(address_of=lambda _job: federation, app=TINY_APP))
    operator.controller.progress = FileProgress(Path("/"))  # the model storage is this machine's tmp_path
    async with operator:
        await hub.create(FL, "fl-digits", body)
        await hub.create(
            "cluster.open-cluster-management.io/v1beta1/placementdecisions",
            "fl-digits",
            placement_decision("fl-digits", "digits", CLUSTERS[:2]),
        )
        await eventually(
            lambda: len(hub.objects("work.open-cluster-management.io/v1/manifestworks")) == 2,
            what="the collaborators' ManifestWorks",
        )
        await make_ready(hub, CLUSTERS[:2])
        await eventually(lambda: phase(hub) in ("Running", "Completed"), timeout=60, what="Running")
        status = await eventually(
            lambda: hub.job()["status"] if phase(hub) in ("Completed", "Failed") else None,
            timeout=120,
            what="the run to finish",
        )
    assert status["phase"] == "Completed", status["message"]
    assert [r["round"] for r in status["rounds"]] == [1, 2]
    assert all(r["participants"] == CLUSTERS[:2] for r in status["rounds"])
    assert status["modelPath"] == f"{models}/model.pt"
    assert status["finalMetrics"] == {"files": 2.0}  # each SuperNode read its own cluster's data path
    assert hub.job()["metadata"]["annotations"]["federation.fleet.dev/run-id"].isdigit()
    assert not hub.objects("work.open-cluster-management.io/v1/manifestworks")
