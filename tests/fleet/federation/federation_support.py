"""Helpers of the federation tests: a tiny repository, a tiny Flower app, finding a run's processes."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from fleet.federation.progress import RoundFinished

TINY_APP = Path(__file__).resolve().parent / "tinyapp"
FLEET = str(Path(sys.executable).parent / "fleet")
"""The `fleet` command of this environment, to run as a user does (a process of its own)."""
"""A Flower app with fleet's run config and progress events and no torch (tests/fleet/federation/tinyapp)."""


def write_repository(
    root: Path,
    clusters: list[str],
    *,
    min_clients: int = 2,
    rounds: int = 2,
    round_timeout: int = 20,
    tls: bool = True,
) -> Path:
    """A repository with one job `tiny` placing each of ``clusters`` (all in eu-west, holding `digits`)."""
    (root / "jobs").mkdir(parents=True)
    (root / "clusters").mkdir()
    (root / "policies").mkdir()
    (root / "jobs" / "tiny.yaml").write_text(
        f"""name: tiny
namespace: fl-tiny
images: {{server: example/app:1, client: example/app:1}}
rounds: {rounds}
minAvailableClients: {min_clients}
maxClients: {len(clusters)}
dataset: digits
training: {{roundTimeoutSeconds: {round_timeout}}}
storage: {{pvc: {{name: tiny-model, size: 1Gi, path: /models/tiny}}}}
listeners: [{{type: NodePort, port: 30093}}]
tls: {str(tls).lower()}
clusterSets: [research]
"""
    )
    for name in clusters:
        (root / "clusters" / f"{name}.yaml").write_text(
            f"""name: {name}
clusterSet: research
labels: {{region: eu-west}}
datasets: {{digits: {{path: /data/{name}, samples: 10}}}}
capacity: {{cpu: "2", memory: 4Gi}}
"""
        )
    policy = "allowedClusters: {matchLabels: {region: eu-west}}\n"
    rules = f"rules: {{requireTls: {str(tls).lower()}, minClientsPerRound: 1}}\n"
    (root / "policies" / "digits.yaml").write_text(f"name: digits\ndatasets: [digits]\n{policy}{rules}")
    return root


def fleet_run_tiny(tmp_path: Path, *extra: str) -> list[str]:
    """``fleet run tiny`` over the repository, data and work folders `write_repository` and `write_data` made
    under ``tmp_path``."""
    repo, data, runs = (str(tmp_path / name) for name in ("repo", "data", "runs"))
    return [FLEET, "run", "tiny", "--repo", repo, "--data-root", data, "--work-dir", runs, *extra]


def write_data(data_root: Path, clusters: list[str]) -> None:
    for name in clusters:
        folder = data_root / "data" / name
        folder.mkdir(parents=True)
        (folder / "part.npz").write_bytes(b"x")


@dataclass
class Recorder:
    """An Observer that keeps what `run_federation` reports."""

    phases: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rounds: list[RoundFinished] = field(default_factory=list)
    clusters: tuple[str, ...] = ()
    on_round: Callable[[RoundFinished], None] | None = None

    def phase(self, message: str) -> None:
        self.phases.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def started(self, rounds: int, clusters: tuple[str, ...]) -> None:
        self.clusters = clusters

    def round(self, event: RoundFinished) -> None:
        self.rounds.append(event)
        if self.on_round is not None:
            self.on_round(event)


def flower_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose command line mentions ``marker`` (a run's folder: every process of a run does)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            alive = process.pid != os.getpid() and process.status() != psutil.STATUS_ZOMBIE
            if alive and any(marker in part for part in process.cmdline()):
                found.append(process)
    return found


def supernode_of(cluster: str, marker: str) -> psutil.Process:
    for process in flower_processes(marker):
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.cmdline())
            supernode = "flower-supernode" in command or "flower_launcher supernode" in command
            if supernode and f'cluster-name="{cluster}"' in command:
                return process
    raise LookupError(f"no SuperNode of {cluster}")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Fail the test when a process of its federation (anything naming its tmp_path) is alive afterwards."""
    yield
    time.sleep(0.2)
    left = flower_processes(str(tmp_path))
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not left, f"processes left behind: {[' '.join(p.cmdline()) for p in left]}"
