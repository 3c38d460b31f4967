"""Real local federations (SuperLink, SuperNodes, TLS, SuperNode authentication) with the tiny app.

Each test starts real Flower processes for a few seconds and checks that none is left behind.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fleet.federation import flower_runtime, local
from fleet.federation.certificates import CertificateAuthority, ClusterIdentity, create_cluster_identity
from fleet.federation.local import RunError, RunSettings, plan_run, run_federation
from fleet.federation.progress import RoundFinished
from fleet.federation.status import STATUS_FILE
from fleet.models import Phase
from fleet.quantity import Quantity
from fleet.repository import load_repository
from tests.fleet.federation.federation_support import (
    TINY_APP,
    Recorder,
    flower_processes,
    supernode_of,
    wait_until,
    write_data,
    write_repository,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("federation")]

SETTINGS = RunSettings(app=TINY_APP, start_timeout=40)


def _plan(tmp_path: Path, clusters: list[str], with_data: list[str] | None = None, **job: int) -> local.LocalPlan:
    repo = write_repository(tmp_path / "repo", clusters, **job)  # type: ignore[arg-type]
    write_data(tmp_path / "data", clusters if with_data is None else with_data)
    return plan_run(load_repository(repo), "tiny", tmp_path / "data", tmp_path / "runs")


def test_run_completes_over_tls_and_writes_status_model_and_card(tmp_path: Path, no_leftovers: None) -> None:
    plan = _plan(tmp_path, ["alpha", "beta", "gamma"], with_data=["alpha", "beta"])
    assert plan.excluded.keys() == {"gamma"}
    observer = Recorder()
    result = run_federation(plan, observer, SETTINGS)
    status = result.status

    assert status.phase is Phase.COMPLETED, status.message
    assert observer.clusters == ("alpha", "beta")
    assert [r.round for r in observer.rounds] == [1, 2]
    assert all(r.participants == ("alpha", "beta") for r in observer.rounds)
    assert any("gamma" in w and "does not exist" in w and "fleet data prepare" in w for w in observer.warnings)
    storage = tmp_path / "runs" / "tiny" / "storage" / "models" / "tiny"
    assert plan.storage_dir == storage
    assert status.model_path == str(storage / "model.pt")
    assert status.final_metrics == {"files": 2.0}  # each collaborator read its own data path: one file each
    assert (storage / "checkpoints" / "round-2.pt").is_file()
    card = (storage / "model-card.md").read_text()
    assert "tiny" in card and "alpha, beta" in card and "repository commit: `unknown`" in card  # tmp: no git
    written = json.loads((tmp_path / "runs" / "tiny" / STATUS_FILE).read_text())
    assert written["phase"] == "Completed"
    assert written["currentRound"] == 2
    assert [r["round"] for r in written["rounds"]] == [1, 2]
    # Flower really ran with TLS and SuperNode authentication.
    superlink_log = (result.attempt.logs / "superlink.log").read_text()
    assert "https://127.0.0.1" in superlink_log
    assert "SuperNode authentication is disabled" not in superlink_log


def test_killed_supernode_run_finishes_with_the_rest(tmp_path: Path, no_leftovers: None) -> None:
    plan = _plan(tmp_path, ["alpha", "beta", "gamma"], rounds=3, round_timeout=6)
    marker = str(tmp_path)

    def kill_gamma(event: RoundFinished) -> None:
        if event.round == 1:
            supernode_of("gamma", marker).kill()

    observer = Recorder(on_round=kill_gamma)
    result = run_federation(plan, observer, SETTINGS)
    status = result.status

    assert status.phase is Phase.COMPLETED, status.message
    assert [r.round for r in observer.rounds] == [1, 2, 3]
    assert observer.rounds[0].participants == ("alpha", "beta", "gamma")
    assert observer.rounds[-1].participants == ("alpha", "beta")
    assert any(w.startswith("collaborator gamma: its SuperNode exited") for w in observer.warnings)
    assert "gamma" not in status.participating_clusters
    assert "3 rounds with alpha, beta, gamma (gamma left during the run)" in status.message


def test_a_round_does_not_wait_for_a_collaborator_seen_to_exit(tmp_path: Path, no_leftovers: None) -> None:
    """Without unregistering the lost node, round 2 waits for its reply until the SuperLink's heartbeat patience
    lapses (about 50 s with Flower 1.41) or the round times out (120 s here)."""
    plan = _plan(tmp_path, ["alpha", "beta", "gamma"], rounds=3, round_timeout=120)
    marker = str(tmp_path)
    finished: dict[int, float] = {}

    def kill_gamma(event: RoundFinished) -> None:
        finished[event.round] = time.monotonic()
        if event.round == 1:
            supernode_of("gamma", marker).kill()

    observer = Recorder(on_round=kill_gamma)
    status = run_federation(plan, observer, SETTINGS).status

    assert status.phase is Phase.COMPLETED, status.message
    assert [r.participants for r in observer.rounds][1:] == [("alpha", "beta"), ("alpha", "beta")]
    # A round of the tiny app takes about 3 s (the idle SuperNode's poll); half the heartbeat patience is the
    # floor that tells "answered at once" from "waited the node out".
    assert finished[2] - finished[1] < 25, f"round 2 took {finished[2] - finished[1]:.1f} s"


def test_killed_supernode_below_minimum_fails_at_once(tmp_path: Path, no_leftovers: None) -> None:
    plan = _plan(tmp_path, ["alpha", "beta"], rounds=5, round_timeout=60)
    marker = str(tmp_path)

    def kill_beta(event: RoundFinished) -> None:
        if event.round == 1:
            supernode_of("beta", marker).kill()

    status = run_federation(plan, Recorder(on_round=kill_beta), SETTINGS).status

    assert status.phase is Phase.FAILED
    assert "only 1 of 2 collaborators remain" in status.message
    assert "minAvailableClients=2" in status.message
    assert "beta: its SuperNode exited" in status.message
    assert status.current_round < 5  # it did not wait out the rounds
    # A run that did not complete publishes nothing: its round-1 checkpoint stays in its own attempt folder.
    assert not plan.storage_dir.exists()
    (attempt,) = (plan.job_dir / "attempts").iterdir()
    assert (attempt / "storage" / "checkpoints" / "round-1.pt").is_file()


def test_foreign_certificate_foreign_ca_and_unregistered_key_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftovers: None
) -> None:
    plan = _plan(tmp_path, ["alpha", "beta", "forged", "lost", "unknown"])
    foreign = CertificateAuthority.create(tmp_path / "foreign", "not the hub")
    real_create = flower_runtime.create_cluster_identity

    def identity(directory: Path, cluster: str, authority: CertificateAuthority) -> ClusterIdentity:
        if cluster == "forged":  # a certificate the hub CA did not sign
            return create_cluster_identity(directory, cluster, foreign)
        made = real_create(directory, cluster, authority)
        if cluster == "lost":  # a SuperNode that trusts another CA than the hub's
            made.trusted_ca.write_bytes(foreign.path.read_bytes())
        return made

    real_register = flower_runtime.ControlClient.register_node

    def register(self: flower_runtime.ControlClient, key: bytes, name: str) -> int:
        if name == "unknown":  # a key the SuperLink never registered
            return 0
        return real_register(self, key, name)

    monkeypatch.setattr(flower_runtime, "create_cluster_identity", identity)
    monkeypatch.setattr(flower_runtime.ControlClient, "register_node", register)
    observer = Recorder()
    result = run_federation(plan, observer, SETTINGS)
    status = result.status

    assert status.phase is Phase.COMPLETED, status.message
    assert observer.clusters == ("alpha", "beta")
    assert all(r.participants == ("alpha", "beta") for r in observer.rounds)
    warnings = "\n".join(observer.warnings)
    assert "collaborator forged: refused: the certificate of cluster 'forged'" in warnings
    assert "is not signed by the hub CA" in warnings
    # Flower refuses the other two: the SuperNode cannot verify a SuperLink certificate from another CA, and
    # the SuperLink does not activate a SuperNode whose key is not registered.
    lost = next(w for w in observer.warnings if w.startswith("collaborator lost:"))
    assert "its SuperNode exited" in lost and "CERTIFICATE_VERIFY_FAILED" in lost
    unknown = next(w for w in observer.warnings if w.startswith("collaborator unknown:"))
    assert "its SuperNode exited" in unknown and "Failed to activate SuperNode" in unknown
    logs = result.attempt.logs
    assert not (logs / "supernode-forged.log").exists()  # never started
    assert "SuperNode ID" not in (logs / "supernode-unknown.log").read_text()  # never let in


def test_too_few_collaborators_with_data_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(RunError) as refused:
        _plan(tmp_path, ["alpha", "beta", "gamma"], with_data=["alpha"])
    message = str(refused.value)
    assert f"only 1 of the placed clusters have their data under --data-root {tmp_path / 'data'}" in message
    assert "collaborator beta: its data path /data/beta" in message
    assert not (tmp_path / "runs").exists()


def test_a_test_split_that_does_not_fit_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from fleet.app.data import write_partition
    from fleet.federation.local import check_test_data

    repo = write_repository(tmp_path / "repo", ["alpha", "beta"])
    for cluster, size in (("alpha", 8), ("beta", 8)):
        write_partition(tmp_path / "data" / "data" / cluster / "part.npz", *_images(size))
    plan = plan_run(load_repository(repo), "tiny", tmp_path / "data", tmp_path / "runs")
    write_partition(tmp_path / "test.npz", *_images(28))
    with pytest.raises(RunError, match=r"expected images of 8x8, as the collaborators' data \(alpha: .*got 28x28"):
        check_test_data(plan, tmp_path / "test.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip archive")
    with pytest.raises(RunError, match=r"--test-data .*broken.npz: expected a held-out split the ServerApp can read"):
        check_test_data(plan, tmp_path / "broken.npz")
    write_partition(tmp_path / "fits.npz", *_images(8))
    check_test_data(plan, tmp_path / "fits.npz")
    assert not (tmp_path / "runs").exists()


def _images(size: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, size, size), dtype=np.uint8), np.arange(20, dtype=np.uint8) % 10


def test_placement_selecting_too_few_clusters_is_refused(tmp_path: Path) -> None:
    repository = load_repository(write_repository(tmp_path / "repo", ["alpha", "beta"]))
    with pytest.raises(RunError, match="no job named 'other'"):
        plan_run(repository, "other", tmp_path / "data", tmp_path / "runs")
    # The loader refuses such a repository; a cluster relabelled since must not slip through.
    beta = repository.clusters["beta"]
    repository.clusters["beta"] = beta.model_copy(update={"labels": {"region": "us-east"}})
    with pytest.raises(RunError, match=r"needs minAvailableClients=2 collaborators, but placement selects 1"):
        plan_run(repository, "tiny", tmp_path / "data", tmp_path / "runs")


def test_stopping_in_the_middle_leaves_no_process(tmp_path: Path, no_leftovers: None) -> None:
    """SIGTERM (as from a service manager) mid-run: Failed with the reason, every process gone."""
    import os
    import signal

    plan = _plan(tmp_path, ["alpha", "beta"], rounds=20)
    marker = str(tmp_path)
    seen: list[int] = []

    def interrupt(event: RoundFinished) -> None:
        seen.extend(p.pid for p in flower_processes(marker))
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()

    observer = Recorder(on_round=lambda e: interrupt(e) if e.round == 1 else None)
    result = run_federation(plan, observer, SETTINGS)
    status = result.status
    assert status.phase is Phase.FAILED
    assert "interrupted by SIGTERM" in status.message
    assert len(seen) >= 5  # SuperLink, SuperExec, ServerApp, 2 SuperNodes, the executor
    wait_until(lambda: not flower_processes(marker), 10, "every process to end")


def test_s3_storage_maps_to_a_folder_named_after_bucket_and_prefix(tmp_path: Path) -> None:
    repo = write_repository(tmp_path / "repo", ["alpha", "beta"])
    job = repo / "jobs" / "tiny.yaml"
    job.write_text(
        job.read_text().replace(
            "storage: {pvc: {name: tiny-model, size: 1Gi, path: /models/tiny}}",
            "storage: {s3: {bucket: fl-models, prefix: teams/digits/, region: eu-west-1, credentialsSecret: s3}}",
        )
    )
    write_data(tmp_path / "data", ["alpha", "beta"])
    plan = plan_run(load_repository(repo), "tiny", tmp_path / "data", tmp_path / "runs")
    assert plan.storage_dir == (tmp_path / "runs" / "tiny" / "storage" / "s3" / "fl-models" / "teams" / "digits")


def test_tls_false_runs_without_tls_and_says_so(tmp_path: Path, no_leftovers: None) -> None:
    repo = write_repository(tmp_path / "repo", ["alpha", "beta"], rounds=1, tls=False)
    write_data(tmp_path / "data", ["alpha", "beta"])
    plan = plan_run(load_repository(repo), "tiny", tmp_path / "data", tmp_path / "runs")
    observer = Recorder()
    result = run_federation(plan, observer, SETTINGS)
    status = result.status
    assert status.phase is Phase.COMPLETED, status.message
    assert any("WITHOUT TLS" in w for w in observer.warnings)
    assert not (result.attempt.path / "certs").exists()
    superlink_log = (result.attempt.logs / "superlink.log").read_text()
    assert "http://127.0.0.1" in superlink_log and "https://" not in superlink_log
    assert "TLS: OFF" in (plan.storage_dir / "model-card.md").read_text()


def test_a_refused_placement_says_why_in_quantities_and_policy_names(tmp_path: Path) -> None:
    repository = load_repository(write_repository(tmp_path / "repo", ["alpha", "beta", "gamma"], min_clients=3))
    job = repository.jobs["tiny"]
    wanted = job.resources.model_copy(update={"cpu": Quantity("500m")})
    repository.jobs["tiny"] = job.model_copy(update={"resources": wanted})
    small = repository.clusters["beta"].capacity.model_copy(update={"cpu": Quantity("100m")})
    repository.clusters["beta"] = repository.clusters["beta"].model_copy(update={"capacity": small})
    gamma = repository.clusters["gamma"]
    repository.clusters["gamma"] = gamma.model_copy(update={"labels": {"region": "us-east"}})
    with pytest.raises(RunError) as refused:
        plan_run(repository, "tiny", tmp_path / "data", tmp_path / "runs")
    message = str(refused.value)
    assert "beta: capacity below the request: cpu 500m requested, cluster has 100m" in message
    assert "gamma: policy digits: " in message
    assert "managedCluster" not in message and "CEL" not in message
