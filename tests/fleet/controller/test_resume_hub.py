"""The controller resumes a job whose aggregator is killed mid-run, with the Flower side real (the SuperLink with
its state in a database file, two SuperNodes, the ServerApp the SuperLink starts) and only the Kubernetes API
mocked (kmock): the job goes on Running and completes every round once, from the killed run's last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fleet.controller.objects import SUPERLINK_STATE
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
    # Mostly a wait for Flower's 60 s task heartbeat patience: beside the federation group, not in it.
    pytest.mark.xdist_group("aggregator-lease"),
]

TINY_APP = Path(__file__).resolve().parents[1] / "federation" / "tinyapp"


@pytest.fixture
def superlink(tmp_path: Path) -> Iterator[tuple[str, psutil.Process, Path]]:
    """A SuperLink keeping its state in a file on the 'PVC', as the job's Deployment starts it, and one SuperNode
    for each of the first two clusters; its address, its process, its database."""
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
    port, database = free_port(), tmp_path / "models" / "digits" / SUPERLINK_STATE
    database.parent.mkdir(parents=True)
    address = f"127.0.0.1:{port}"
    with ProcessSupervisor(tmp_path / "logs", env) as supervisor:
        process = supervisor.start(
            "superlink",
            [str(bin_dir / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
             "--disable-runtime-dependency-installation", "--database", str(database)],
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
        yield address, psutil.Process(process.pid), database


def _serverapps(superlink: psutil.Process) -> list[psutil.Process]:
    return [p for p in superlink.children(recursive=True) if any("flwr-serverapp" in a for a in p.cmdline())]


async def test_a_killed_aggregator_is_resumed_and_the_job_completes(
    hub: Hub, tmp_path: Path, superlink: tuple[str, psutil.Process, Path]
) -> None:
    address, superlink_process, database = superlink
    models = tmp_path / "models" / "digits"
    storage = ModelStorage(pvc=PVCStorage(name="digits-model", size=Quantity("1Gi"), path=str(models)))
    body = resource(job(tls=False, rounds=3, storage=storage, training=Training(round_timeout_seconds=60)))
    operator = Operator(hub, FlowerRunBackend(address_of=lambda _job: address, app=TINY_APP))
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
        progress = models / "progress.jsonl"
        await eventually(
            lambda: progress.is_file() and '"event": "round"' in progress.read_text(), timeout=120, what="round 1"
        )
        (serverapp,) = _serverapps(superlink_process)
        serverapp.send_signal(signal.SIGKILL)  # the aggregator dies mid-run: no last event
        killed_after = max(json.loads(line).get("round", 0) for line in progress.read_text().splitlines())
        status = await eventually(
            lambda: hub.job()["status"] if phase(hub) in ("Completed", "Failed") else None,
            timeout=180,
            what="the resumed run to finish",
        )
    assert status["phase"] == "Completed", status["message"]
    assert [r["round"] for r in status["rounds"]] == [1, 2, 3]
    annotations = hub.job()["metadata"]["annotations"]
    assert annotations["federation.fleet.dev/resumes"] == "1"
    assert hub.event_reasons().count("RunResumed") == 1 and "RunFailed" not in hub.event_reasons()
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [e["event"] for e in events].count("started") == 2
    assert next(e for e in events[1:] if e["event"] == "started")["resumed_from_round"] == killed_after
    # The SuperLink's database on the PVC holds both runs: the lost one and the resumed one, now the job's.
    with sqlite3.connect(database) as state:
        runs = [row[0] for row in state.execute("SELECT run_id FROM run ORDER BY rowid")]
    assert len(runs) == 2 and str(runs[1] & (2**64 - 1)) == annotations["federation.fleet.dev/run-id"]
