"""Real local OpenFL federations (`fleet.federation.openfl_runtime`): OpenFL 1.9's own aggregator and
collaborators, from OpenFL's environment, over its mutual TLS with certificates of the run's hub CA.

Lean on purpose (each test starts OpenFL processes for about a minute on 2 cores): scikit-learn's 8x8 digits,
200 images per cluster, 3 local epochs, 2 or 3 rounds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from fleet.app.data import write_partition
from fleet.data import sklearn_digits
from fleet.evaluation import evaluate_model
from fleet.federation import openfl_runtime
from fleet.federation.certificates import CertificateAuthority, ClusterIdentity, create_cluster_identity
from fleet.federation.local import RunSettings, plan_run, run_federation
from fleet.federation.status import STATUS_FILE
from fleet.hub import collaborator_user
from fleet.models import Phase
from fleet.repository import load_repository
from tests.fleet.federation.federation_support import (
    Recorder,
    fleet_run_tiny,
    flower_processes,
    wait_until,
    write_repository,
)

# Apart from the Flower federations (group "federation"): on 2 workers both groups run at once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("openfl")]

SETTINGS = RunSettings(start_timeout=45)
OPENFL_PYTHON = openfl_runtime.DEFAULT_OPENFL_VENV / "bin" / "python"


def _repository(tmp_path: Path, clusters: list[str], rounds: int = 2) -> Path:
    repo = write_repository(tmp_path / "repo", clusters, rounds=rounds, round_timeout=30)
    job = repo / "jobs" / "tiny.yaml"
    job.write_text(job.read_text().replace("name: tiny\n", "name: tiny\nframework: openfl\n"))
    job.write_text(
        job.read_text().replace("training: {", "training: {localEpochs: 3, learningRate: 0.05, batchSize: 16, ")
    )
    digits = sklearn_digits()
    for position, name in enumerate(clusters):
        part = slice(200 * position, 200 * position + 200)
        write_partition(tmp_path / "data" / "data" / name / "part.npz", digits.images[part], digits.labels[part])
    test = slice(1500, 1700)
    write_partition(tmp_path / "data" / "test" / "digits.npz", digits.images[test], digits.labels[test])
    return repo


def _openfl_processes(marker: str) -> list[psutil.Process]:
    return [p for p in flower_processes(marker) if "fleet.app_openfl.launcher" in " ".join(p.cmdline())]


def test_openfl_trains_over_mutual_tls_refuses_a_foreign_certificate_and_saves_a_model_fleet_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftovers: None
) -> None:
    repo = _repository(tmp_path, ["alpha", "beta", "gamma"])
    plan = plan_run(load_repository(repo), "tiny", tmp_path / "data", tmp_path / "runs")
    foreign = CertificateAuthority.create(tmp_path / "foreign", "not the hub")

    def identity(directory: Path, cluster: str, authority: CertificateAuthority) -> ClusterIdentity:
        # gamma presents a certificate with its right name, signed by another CA: the handshake must fail.
        return create_cluster_identity(directory, cluster, foreign if cluster == "gamma" else authority)

    monkeypatch.setattr(openfl_runtime, "create_cluster_identity", identity)
    observer = Recorder()
    test_data = tmp_path / "data" / "test" / "digits.npz"
    result = run_federation(plan, observer, SETTINGS, test_data)
    status = result.status

    assert status.phase is Phase.COMPLETED, status.message
    assert [r.round for r in observer.rounds] == [1, 2]
    assert all(r.participants == ("alpha", "beta") for r in observer.rounds)
    assert any("collaborator gamma: did not connect in time" in w for w in observer.warnings), observer.warnings
    # OpenFL's mutual TLS, with the hub CA's certificates in OpenFL's layout, named by OCM's add-on users.
    workspace = result.attempt.path / "openfl"
    network = yaml.safe_load((workspace / "plan" / "plan.yaml").read_text())["network"]["settings"]
    assert network["use_tls"] is True and network["require_client_auth"] is True
    assert (workspace / "cert" / "cert_chain.crt").read_bytes() == (
        result.attempt.path / "certs" / "ca.pem"
    ).read_bytes()
    assert (workspace / "cert" / "server" / "agg_127.0.0.1.crt").is_file()
    names = {c: collaborator_user(c) for c in ("alpha", "beta", "gamma")}
    assert yaml.safe_load((workspace / "plan" / "cols.yaml").read_text()) == {"collaborators": list(names.values())}
    assert sorted(p.name for p in (workspace / "cert" / "client").iterdir()) == sorted(
        f"col_{n}.{suffix}" for n in names.values() for suffix in ("crt", "key")
    )
    # Each collaborator is given its own cluster's claimed path, and only that one.
    data = dict(line.split(",", 1) for line in (workspace / "plan" / "data.yaml").read_text().splitlines())
    assert data == {names[c]: str((tmp_path / "data" / "data" / c).resolve()) for c in names}
    # gamma's collaborator reached the aggregator and was refused at the handshake, over and over.
    gamma_log = (result.attempt.logs / "collaborator-gamma.log").read_text()
    assert "Received Tasks" not in gamma_log and ("UNAVAILABLE" in gamma_log or "handshake" in gamma_log.lower())
    assert json.loads((workspace / "logs" / "connected.json").read_text()) == sorted([names["alpha"], names["beta"]])

    storage = plan.storage_dir
    assert status.model_path == str(storage / "model.pt")
    assert (storage / "checkpoints" / "round-1.pt").is_file() and (storage / "checkpoints" / "round-2.pt").is_file()
    evaluation = evaluate_model(storage / "model.pt", test_data)
    assert evaluation.accuracy == pytest.approx(status.final_metrics["accuracy"])
    assert evaluation.accuracy > 0.3  # two rounds on 400 images of 8x8 digits: well above chance (0.1)
    metrics = json.loads((storage / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [1, 2] and metrics["settings"]["framework"] == "openfl"
    card = (storage / "model-card.md").read_text()
    assert "framework: openfl" in card and "OpenFL mutual TLS" in card and "alpha, beta" in card
    assert json.loads((tmp_path / "runs" / "tiny" / STATUS_FILE).read_text())["phase"] == "Completed"

    # A fresh run never resumes: the aggregator refuses a workspace whose local_state/tensor.db holds a round.
    assert (workspace / "local_state" / "tensor.db").is_file()
    resumed = subprocess.run(
        [str(OPENFL_PYTHON), "-m", "fleet.app_openfl.launcher", "--workspace", str(workspace), "aggregator", "start"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(workspace), "COLUMNS": "400"},
        timeout=120,
        check=False,
    )
    assert resumed.returncode != 0
    assert "a fresh run must not resume an old tensor.db" in resumed.stdout + resumed.stderr


def test_a_lost_collaborator_is_left_out_and_ctrl_c_stops_every_openfl_process(
    tmp_path: Path, no_leftovers: None
) -> None:
    _repository(tmp_path, ["alpha", "beta", "gamma"], rounds=3)
    process = subprocess.Popen(
        fleet_run_tiny(tmp_path, "--test-data", str(tmp_path / "data" / "test" / "digits.npz")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    status_file = tmp_path / "runs" / "tiny" / STATUS_FILE
    marker = str(tmp_path)

    def round_done(number: int) -> bool:
        try:
            return json.loads(status_file.read_text()).get("currentRound", 0) >= number
        except (OSError, ValueError):
            return False

    try:
        wait_until(lambda: round_done(1), 240, "round 1")
        gamma = [p for p in _openfl_processes(marker) if collaborator_user("gamma") in " ".join(p.cmdline())]
        assert gamma, "no collaborator of gamma"
        for collaborator in gamma:
            collaborator.kill()
        wait_until(lambda: round_done(2), 120, "round 2 without gamma")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    status = json.loads(status_file.read_text())
    assert process.returncode != 0, output
    assert status["phase"] == "Failed" and "interrupted by SIGINT" in status["message"], status
    second = next(r for r in status["rounds"] if r["round"] == 2)
    assert second["participants"] == ["alpha", "beta"]
    assert "collaborator gamma: its OpenFL collaborator exited" in output
    assert not (tmp_path / "runs" / "tiny" / "storage").exists()  # nothing published by a run that did not complete
    assert not _openfl_processes(marker)
