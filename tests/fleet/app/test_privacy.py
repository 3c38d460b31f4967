"""Differential privacy and secure aggregation in the ServerApp's rounds, against the in-memory Grid of
`test_server_app`: the real ClientApp, with Flower's clipping and SecAgg+ mods, answers each message
in-process, and each node receives a copy of what was sent, as over the wire."""

# ruff: noqa: F811  (the fixtures `partitions` and `_task_identity` are test_server_app's, imported by name)

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from dp_accounting import dp_event, rdp

from fleet.app.privacy import DifferentialPrivacySettings
from fleet.app.server_app import FederationError, Settings
from fleet.app.task import build_model, load_model
from tests.fleet.app.test_server_app import (
    FakeGrid,
    _events,
    _nodes,
    _run,
    _settings,
    _task_identity,  # noqa: F401
    partitions,  # noqa: F401
)

NAMES = ["alpha", "beta", "gamma"]  # 120 images each: the example-weighted mean is the plain mean


def _dp(**overrides: Any) -> DifferentialPrivacySettings:
    values: dict[str, Any] = {
        "side": "server",
        "clipping": "fixed",
        "noise_multiplier": 1.0,
        "clipping_norm": 1.0,
        "target_clipped_quantile": 0.5,
        "clip_norm_learning_rate": 0.2,
        "target_delta": 1e-5,
        "clipped_count_stddev": None,
        "epsilon": None,
        "population": 3,
    }
    values.update(overrides)
    return DifferentialPrivacySettings(**values)


def _flat(path: Path) -> torch.Tensor:
    model, _ = load_model(path)
    return torch.cat([value.flatten() for value in model.state_dict().values()])


def _start() -> torch.Tensor:
    """The model round 1 starts from (the ServerApp seeds it from the test split's shape, seed 0)."""
    return torch.cat([value.flatten() for value in build_model((1, 8, 8), seed=0).state_dict().values()])


def _one_round(tmp_path: Path, partitions: dict[str, Path], **overrides: Any) -> tuple[Settings, torch.Tensor]:
    settings = _settings(tmp_path, partitions, num_rounds=1, **overrides)
    _run(FakeGrid(_nodes(partitions, NAMES)), settings)
    return settings, _flat(settings.model_dir / "model.pt")


@pytest.mark.parametrize("side", ["server", "client"])
def test_each_update_is_clipped_to_the_norm(tmp_path: Path, partitions: dict[str, Path], side: str) -> None:
    _, plain = _one_round(tmp_path / "plain", partitions)
    norm = 1e-3
    _, private = _one_round(
        tmp_path / "dp", partitions, differential_privacy=_dp(side=side, clipping_norm=norm, noise_multiplier=1e-6)
    )
    start = _start()
    assert torch.linalg.vector_norm(plain - start) > 100 * norm  # unclipped, the round moves the model far
    # The mean of updates clipped to the norm moves it at most that far (the noise is ~1e-9 here).
    assert torch.linalg.vector_norm(private - start) <= norm * 1.001


@pytest.mark.parametrize("side", ["server", "client"])
def test_the_aggregate_carries_gaussian_noise_of_the_documented_scale(
    tmp_path: Path, partitions: dict[str, Path], side: str
) -> None:
    _, plain = _one_round(tmp_path / "plain", partitions)
    norm, noise = 100.0, 0.01  # a norm no update reaches: the difference from the plain mean is the noise
    _, private = _one_round(
        tmp_path / "dp", partitions, differential_privacy=_dp(side=side, clipping_norm=norm, noise_multiplier=noise)
    )
    difference = private - plain
    expected = noise * norm / len(NAMES)  # Flower's stdv: noise multiplier x clipping norm / updates
    assert float(difference.std()) == pytest.approx(expected, rel=0.05)
    assert abs(float(difference.mean())) < expected / 10


def test_spent_epsilon_is_reported_per_round_as_the_rdp_accountant_computes_it(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    settings = _settings(tmp_path, partitions, num_rounds=3, differential_privacy=_dp(noise_multiplier=2.0))
    final = _run(FakeGrid(_nodes(partitions, NAMES)), settings)
    rounds = [e for e in _events(settings.model_dir) if e["event"] == "round"]
    for number, event in enumerate(rounds, 1):
        accountant = rdp.RdpAccountant()  # Google's dp-accounting directly: a Gaussian release per round
        accountant.compose(dp_event.GaussianDpEvent(2.0), number)
        assert event["metrics"]["privacy_epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
        assert event["metrics"]["privacy_delta"] == 1e-5
    assert rounds[0]["metrics"]["privacy_epsilon"] < rounds[2]["metrics"]["privacy_epsilon"]
    assert final["privacy_epsilon"] == rounds[2]["metrics"]["privacy_epsilon"]
    recorded = json.loads((settings.model_dir / "metrics.json").read_text())["settings"]["differential_privacy"]
    assert recorded["noise_multiplier"] == 2.0 and recorded["side"] == "server"


def test_a_run_stops_before_the_round_that_would_exceed_the_budget(tmp_path: Path, partitions: dict[str, Path]) -> None:
    # Noise multiplier 1 at delta 1e-5: epsilon 5.0 after one round, 7.1 after two, 8.7 after three.
    settings = _settings(tmp_path, partitions, num_rounds=5, differential_privacy=_dp(epsilon=8.0))
    grid = FakeGrid(_nodes(partitions, NAMES))
    with pytest.raises(FederationError, match=r"round 3: the privacy budget would be exceeded") as error:
        _run(grid, settings)
    assert "epsilon 7.077 (delta 1e-05) is spent" in str(error.value) and "budget 8" in str(error.value)
    events = _events(settings.model_dir)
    assert [e["event"] for e in events] == ["started", "round", "round", "failed"]
    assert events[-1]["reason"] == str(error.value)
    assert all(node.received == ["train", "train"] for node in grid.nodes.values())  # round 3 never sent
    assert not (settings.model_dir / "model.pt").exists()


def test_adaptive_clipping_moves_the_norm_and_reports_no_epsilon(tmp_path: Path, partitions: dict[str, Path]) -> None:
    for side in ("server", "client"):
        dp = _dp(side=side, clipping="adaptive", clipping_norm=1e-3, noise_multiplier=0.1, clipped_count_stddev=1.0)
        settings = _settings(tmp_path / side, partitions, num_rounds=2, differential_privacy=dp)
        final = _run(FakeGrid(_nodes(partitions, NAMES)), settings)
        assert "privacy_epsilon" not in final  # Flower 1.41 accounts for fixed clipping only
        first, second = (_flat(settings.model_dir / "checkpoints" / f"round-{n}.pt") for n in (1, 2))
        # Every update is far above 1e-3: all are clipped, so the norm grows (by exp(0.2 x 0.5) a round).
        assert torch.linalg.vector_norm(second - first) > 1e-3


def test_client_side_clipping_without_test_data_sends_the_seeded_model_first(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    dp = _dp(side="client", clipping_norm=1e-3, noise_multiplier=1e-6)
    settings = _settings(tmp_path, partitions, num_rounds=1, test_data="", differential_privacy=dp)
    grid = FakeGrid(_nodes(partitions, NAMES))
    _run(grid, settings)
    # One evaluate to learn the images' shape, then the train instruction with the seeded model to clip against.
    assert all(node.received == ["evaluate", "train", "evaluate"] for node in grid.nodes.values())
    assert torch.linalg.vector_norm(_flat(settings.model_dir / "model.pt") - _start()) <= 1e-3 * 1.001


def test_secure_aggregation_gives_the_plain_mean_and_the_aggregator_no_update(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    _, plain = _one_round(tmp_path / "plain", partitions)
    settings = _settings(tmp_path / "secure", partitions, num_rounds=1, secure_shares=3, secure_threshold=2)
    grid = FakeGrid(_nodes(partitions, NAMES))
    pulled: list[Any] = []
    pull = grid.pull_messages
    grid.pull_messages = lambda ids: pulled.extend(replies := pull(ids)) or replies  # type: ignore[method-assign]
    _run(grid, settings)
    secure = _flat(settings.model_dir / "model.pt")
    # SecAgg+ quantises each value into 2**22 steps over [-8, 8]: the mean agrees to that precision.
    assert float((secure - plain).abs().max()) < 1e-5
    assert all(node.received == ["train"] * 4 for node in grid.nodes.values())  # its four stages
    assert len(pulled) == 12
    assert all(len(array) == 0 for reply in pulled for array in reply.content.array_records.values())
    events = _events(settings.model_dir)
    assert events[1]["participants"] == NAMES
    assert all(size > 1000 for size in events[1]["received_bytes"].values())  # the masked vectors


def test_secure_aggregation_survives_a_collaborator_leaving(tmp_path: Path, partitions: dict[str, Path]) -> None:
    settings = _settings(tmp_path, partitions, num_rounds=2, secure_shares=3, secure_threshold=2)
    grid = FakeGrid(_nodes(partitions, NAMES, disconnect_at_round={"gamma": 2}))
    _run(grid, settings)
    rounds = [e for e in _events(settings.model_dir) if e["event"] == "round"]
    assert [r["participants"] for r in rounds] == [NAMES, ["alpha", "beta"]]


def test_privacy_run_config_is_read_and_checked(tmp_path: Path) -> None:
    config: dict[str, Any] = {"num-rounds": 2, "model-dir": str(tmp_path), "population": 3}
    assert Settings.from_run_config(config).differential_privacy is None
    dp = {"dp-noise-multiplier": 1.5, "dp-clipping-norm": 0.5, "dp-side": "client", "dp-epsilon": 4.0}
    settings = Settings.from_run_config(config | dp)
    assert settings.differential_privacy == _dp(side="client", noise_multiplier=1.5, clipping_norm=0.5, epsilon=4.0)
    with pytest.raises(FederationError, match=r"run config 'dp-side': expected 'server' or 'client', got 'both'"):
        Settings.from_run_config(config | dp | {"dp-side": "both"})
    with pytest.raises(FederationError, match=r"'secagg-reconstruction-threshold': expected at least 2 and below"):
        Settings.from_run_config(config | {"secagg-shares": 3, "secagg-reconstruction-threshold": 3})
    with pytest.raises(FederationError, match=r"'secagg-shares': expected 0 with differential privacy"):
        Settings.from_run_config(config | dp | {"secagg-shares": 3, "secagg-reconstruction-threshold": 2})
