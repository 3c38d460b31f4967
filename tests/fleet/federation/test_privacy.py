"""Secure aggregation and differential privacy in a real local federation: ``fleet run`` (its own process) of a
tiny repository over mutual TLS, with fleet's Flower app on scikit-learn's 8x8 digits.

What the aggregator holds is read inside its process: `inspect/sitecustomize.py` (on the run's PYTHONPATH)
records every Message the ServerApp's Grid pulls from the SuperLink, as it arrived, and the model each
ClientApp had after its local training (its update in clear). A run without secure aggregation is the
control: there the ServerApp does receive each update in clear, so the inspection sees what it looks for.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from dp_accounting import dp_event, rdp
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.quantization import quantize

from fleet.app.data import write_partition
from fleet.app.task import load_model
from fleet.data import sklearn_digits
from fleet.federation.local import STATUS_FILE
from tests.fleet.federation.federation_support import fleet_run_tiny, write_repository

INSPECT = Path(__file__).resolve().parent / "inspect"
ROOT = Path(__file__).resolve().parents[3]
CLUSTERS = ["alpha", "beta", "gamma"]
SECURE = "privacy: {secureAggregation: {shares: 3, reconstructionThreshold: 2}}\n"


def _federation(
    tmp_path: Path, privacy: str, *, rounds: int = 1, succeeds: bool = True
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``fleet run`` of a job over CLUSTERS with ``privacy``; the inspection's folder and the finished run."""
    repo = write_repository(tmp_path / "repo", CLUSTERS, rounds=rounds, round_timeout=60)
    job = repo / "jobs" / "tiny.yaml"
    job.write_text(job.read_text() + privacy)
    digits = sklearn_digits()
    for index, name in enumerate(CLUSTERS):  # the 10 samples each cluster claims
        chosen = slice(index * 10, (index + 1) * 10)
        write_partition(tmp_path / "data" / "data" / name / "part.npz", digits.images[chosen], digits.labels[chosen])
    seen = tmp_path / "seen"
    seen.mkdir()
    env = {**os.environ, "PYTHONPATH": str(INSPECT), "FLEET_TEST_INSPECT_DIR": str(seen)}
    done = subprocess.run(fleet_run_tiny(tmp_path), capture_output=True, text=True, timeout=300, env=env)
    assert (done.returncode == 0) is succeeds, done.stdout + done.stderr
    return seen, done


def _records(seen: Path, kind: str) -> list[dict[str, Any]]:
    return [pickle.loads(path.read_bytes()) for path in sorted(seen.glob(f"{kind}-*.pickle"))]


def _received_floats(received: list[dict[str, Any]]) -> list[np.ndarray]:
    return [array for record in received for arrays in record["arrays"].values() for array in arrays]


def _holds(received: list[np.ndarray], update: list[np.ndarray]) -> bool:
    """Whether one of the received arrays is one of the update's arrays (the layers of a model in clear)."""
    return any(
        any(array.shape == layer.shape and np.allclose(array, layer, atol=1e-6) for array in received)
        for layer in update
        if layer.size > 1
    )


def _model(tmp_path: Path) -> list[np.ndarray]:
    model, _ = load_model(tmp_path / "runs" / "tiny" / "storage" / "models" / "tiny" / "model.pt")
    return [value.numpy() for value in model.state_dict().values()]


def test_without_secure_aggregation_the_aggregator_receives_each_update_and_dp_stops_at_the_budget(
    tmp_path: Path, no_leftovers: None
) -> None:
    # Central differential privacy, server-side clipping: the aggregator clips and noises each update, so it
    # holds them in clear (the inspection's control). Noise multiplier 1 at delta 1e-5 spends epsilon 4.7
    # in one round; a second would take it to 7.1, past the budget of 6.
    dp = "privacy: {differentialPrivacy: {noiseMultiplier: 1.0, clippingNorm: 0.5, epsilon: 6}}\n"
    seen, done = _federation(tmp_path, dp, rounds=2, succeeds=False)
    updates = [record["arrays"] for record in _records(seen, "client")]
    assert len(updates) == 3  # round 1 only
    received = _received_floats(_records(seen, "server"))
    assert all(_holds(received, update) for update in updates)

    status = json.loads((tmp_path / "runs" / "tiny" / STATUS_FILE).read_text())
    assert status["phase"] == "Failed"
    assert "round 2: the privacy budget would be exceeded" in status["message"], status["message"]
    assert "round 2: the privacy budget would be exceeded" in done.stdout + done.stderr
    assert [r["round"] for r in status["rounds"]] == [1]
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event.GaussianDpEvent(1.0))
    spent = status["rounds"][0]["metrics"]
    assert spent["privacy_epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert spent["privacy_delta"] == 1e-5


def test_with_secure_aggregation_the_aggregator_never_holds_an_update_in_clear(
    tmp_path: Path, no_leftovers: None
) -> None:
    seen, _ = _federation(tmp_path, SECURE)
    updates = [record["arrays"] for record in _records(seen, "client")]
    assert len(updates) == 3  # each collaborator trained once
    server = _records(seen, "server")
    received = _received_floats(server)
    # No update, nor any layer of one, in any message the ServerApp pulled: train replies carry no arrays
    # at all (secaggplus_mod empties them), evaluate replies none either.
    assert not any(_holds(received, update) for update in updates)
    assert all(array.size == 0 for array in received)
    # What they carry instead: per collaborator a masked vector (uint, one per layer), which is not its
    # quantised update: the masks are uniform over [0, 2**32).
    masked = [bytes_to_ndarray(item) for record in server for item in record["bytes"] if item.startswith(b"\x93NUMPY")]
    sizes = sum(layer.size for layer in updates[0])
    assert sum(array.size for array in masked) == 3 * (sizes + 1)  # SecAgg+ puts the weight in front
    for update in updates:
        quantised = quantize(update, 8.0, 4194304)
        for layer in quantised:
            same = [m for m in masked if m.shape == layer.shape]
            assert same and all(np.mean(m == layer) < 0.01 for m in same)
    # And yet the new global model is the collaborators' mean (to SecAgg+'s quantisation): the sum, only.
    mean = [np.mean([update[i] for update in updates], axis=0) for i in range(len(updates[0]))]
    assert all(np.abs(got - want).max() < 1e-5 for got, want in zip(_model(tmp_path), mean, strict=True))
    status = json.loads((tmp_path / "runs" / "tiny" / STATUS_FILE).read_text())
    assert status["phase"] == "Completed" and status["rounds"][0]["participants"] == CLUSTERS
    card = (tmp_path / "runs" / "tiny" / "storage" / "models" / "tiny" / "model-card.md").read_text()
    assert "- privacy: secure aggregation (SecAgg+, 3 shares, reconstruction threshold 2)" in card


def test_fleet_run_and_the_controller_hand_the_job_s_privacy_to_the_server_app() -> None:
    from fleet.app.server_app import Settings
    from fleet.controller.runs import run_config as hub_run_config
    from fleet.federation.run_config import run_config
    from fleet.models import FederatedLearningSpec, Job

    document = yaml.safe_load((ROOT / "jobs" / "mnist-digits.yaml").read_text())
    dp = {"side": "client", "noiseMultiplier": 0.8, "clippingNorm": 0.3, "epsilon": 5}
    job = Job.model_validate({**document, "privacy": {"differentialPrivacy": dp}})
    local = run_config(job.rounds, job.min_available_clients, job.training, "/m", privacy=job.privacy, population=3)
    hub = hub_run_config(FederatedLearningSpec.from_job(job, {}), "/m")
    for config in (local, hub):
        settings = Settings.from_run_config(config).differential_privacy
        assert settings is not None
        assert (settings.side, settings.noise_multiplier, settings.clipping_norm, settings.epsilon) == (
            "client",
            0.8,
            0.3,
            5.0,
        )
        assert settings.population == job.max_clients == 3
    secure = Job.model_validate(
        {**document, "privacy": {"secureAggregation": {"shares": 3, "reconstructionThreshold": 2}}}
    )
    settings = Settings.from_run_config(hub_run_config(FederatedLearningSpec.from_job(secure, {}), "/m"))
    assert (settings.secure_shares, settings.secure_threshold, settings.differential_privacy) == (3, 2, None)
