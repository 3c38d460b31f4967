"""The ServerApp's round loop against an in-memory Grid whose nodes run the real ClientApp synchronously.

Time is virtual: the loop's clock advances only when it sleeps, so timeouts of minutes cost nothing.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fleet.app import client_app, server_app
from fleet.app.data import write_partition
from fleet.app.server_app import FederationError, Settings, run_federation
from fleet.app.task import load_model


@dataclass
class FakeNode:
    node_id: int
    cluster: str
    data_path: str
    disconnect_at_round: int | None = None
    """From this round on the node is gone: not connected, no replies."""
    silent_at_round: int | None = None
    """From this round on the node stays connected but never replies."""
    received: list[str] = field(default_factory=list)
    state: RecordDict = field(default_factory=RecordDict)
    """The node's context state, which outlives a message as on a SuperNode (SecAgg+ keeps its keys there)."""

    def connected(self, server_round: int) -> bool:
        return self.disconnect_at_round is None or server_round < self.disconnect_at_round


class FakeGrid(Grid):
    """Flower's Grid interface over nodes that answer at once by calling the ClientApp in-process."""

    def __init__(self, nodes: Iterable[FakeNode]) -> None:
        self.nodes = {node.node_id: node for node in nodes}
        self.round = 1
        self._run = Run.create_empty(1)
        self._replies: dict[str, Message] = {}
        self.now = 0.0

    # virtual time for the loop
    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return [n.node_id for n in self.nodes.values() if n.connected(self.round)]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id  # the SuperLink assigns ids
            self.round = int(message.metadata.group_id)
            node = self.nodes[message.metadata.dst_node_id]
            node.received.append(message.metadata.message_type)
            ids.append(message_id)
            if not node.connected(self.round):
                continue
            if node.silent_at_round is not None and self.round >= node.silent_at_round:
                continue
            context = Context(
                run_id=1,
                node_id=node.node_id,
                node_config={"data-path": node.data_path, "cluster-name": node.cluster},
                state=node.state,
                run_config={},
            )
            # A copy, as the wire gives each node its own: a mod may change what it receives (SecAgg+ does).
            try:
                self._replies[message_id] = client_app.app(copy.deepcopy(message), context)
            except Exception as error:  # as a SuperNode answers for a ClientApp that raised
                reason = f"{type(error).__name__}: {error}"
                self._replies[message_id] = Message(
                    Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message
                )
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        ids = self.push_messages(messages)
        return self.pull_messages(ids)


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Flower sets in a ServerApp process before running the app; messages take their run id from it."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture(scope="module")
def partitions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small partitions and a test split cut from scikit-learn's digits (disjoint)."""
    from fleet.data import sklearn_digits

    data = sklearn_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.labels))
    root = tmp_path_factory.mktemp("partitions")
    paths: dict[str, Path] = {}
    for i, name in enumerate(("alpha", "beta", "gamma", "delta")):
        chosen = order[i * 120 : (i + 1) * 120]
        paths[name] = root / name
        write_partition(paths[name] / "digits.npz", data.images[chosen], data.labels[chosen])
    test = order[600:900]
    paths["test"] = root / "test.npz"
    write_partition(paths["test"], data.images[test], data.labels[test])
    return paths


def _settings(tmp_path: Path, partitions: dict[str, Path], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "num_rounds": 2,
        "model_dir": tmp_path / "model",
        "local_epochs": 1,
        "min_available_clients": 2,
        "round_timeout": 300.0,
        "test_data": str(partitions["test"]),
    }
    values.update(overrides)
    return Settings(**values)


def _nodes(partitions: dict[str, Path], names: Iterable[str], **behaviour: dict[str, int]) -> list[FakeNode]:
    nodes = []
    for i, name in enumerate(names):
        node = FakeNode(100 + i, name, str(partitions[name]))
        for attribute, by_name in behaviour.items():
            if name in by_name:
                setattr(node, attribute, by_name[name])
        nodes.append(node)
    return nodes


def _events(model_dir: Path) -> list[dict[str, Any]]:
    lines = (model_dir / "progress.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _run(grid: FakeGrid, settings: Settings) -> dict[str, float]:
    return run_federation(grid, settings, poll_interval=0.05, clock=grid.clock, sleep=grid.sleep)


def test_rounds_write_progress_checkpoints_metrics_and_a_loadable_model(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta", "gamma"]))
    settings = _settings(tmp_path, partitions, local_epochs=3)

    final = _run(grid, settings)

    events = _events(settings.model_dir)
    assert [e["event"] for e in events] == ["started", "round", "round", "completed"]
    assert events[0]["rounds"] == 2
    assert events[0]["min_available_clients"] == settings.min_available_clients
    assert events[0]["round_timeout"] == settings.round_timeout
    for number, event in enumerate(events[1:3], 1):
        assert event["round"] == number
        assert event["participants"] == ["alpha", "beta", "gamma"]
        assert set(event["metrics"]) == {"train_loss", "accuracy", "eval_loss"}
        assert "dropped" not in event and "dropped_clusters" not in event
        assert event["time"].endswith("Z")
        # Each participant's update: the model's float32 weights, as many bytes from each.
        assert set(event["received_bytes"]) == {"alpha", "beta", "gamma"}
        assert len(set(event["received_bytes"].values())) == 1 and event["received_bytes"]["alpha"] > 1000
    assert events[3]["metrics"] == final
    assert set(final) >= {"accuracy", "train_loss"} | {f"accuracy_{d}" for d in range(10)}
    assert (settings.model_dir / "checkpoints" / "round-1.pt").is_file()
    assert (settings.model_dir / "checkpoints" / "round-2.pt").is_file()
    metrics = json.loads((settings.model_dir / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
    assert metrics["final"] == final
    assert metrics["settings"]["num_rounds"] == 2
    timing = metrics["rounds"][0]["seconds"]
    assert [e["seconds"] for e in events[1:3]] == [r["seconds"]["round"] for r in metrics["rounds"]]
    steps = {"round", "waiting_for_nodes", "train_exchange", "aggregate", "evaluate", "client_training_max"}
    assert set(timing) == steps | {"client_max", "overhead"}
    assert timing["client_training_max"] > 0
    # Each collaborator's train handler as it measured it: began <= ended <= pulled by the ServerApp.
    spans = metrics["rounds"][0]["spans"]
    assert set(spans) == {"alpha", "beta", "gamma"} and all(set(s) == {"train"} for s in spans.values())
    assert all(0 <= began <= ended <= pulled for began, ended, pulled in (s["train"] for s in spans.values()))
    slowest = max(ended - began for began, ended, _ in (s["train"] for s in spans.values()))
    assert timing["client_max"] == pytest.approx(slowest, abs=0.002)
    assert timing["client_max"] >= timing["client_training_max"]  # the handler holds the training
    assert timing["overhead"] == pytest.approx(timing["round"] - timing["client_max"], abs=0.002)
    _model, shape = load_model(settings.model_dir / "model.pt")
    assert shape == (1, 8, 8)
    # Server-side evaluation: no node ever got an evaluate message.
    assert all(node.received == ["train", "train"] for node in grid.nodes.values())
    assert final["accuracy"] > 0.5  # 2 rounds of 3 epochs on 360 images: far above chance (0.1)


def test_without_test_data_the_participants_evaluate(tmp_path: Path, partitions: dict[str, Path]) -> None:
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta"]))
    settings = _settings(tmp_path, partitions, test_data="", num_rounds=1)

    final = _run(grid, settings)

    assert set(final) == {"train_loss", "accuracy", "eval_loss"}
    assert 0 <= final["accuracy"] <= 1
    assert all(node.received == ["train", "evaluate"] for node in grid.nodes.values())
    _, shape = load_model(settings.model_dir / "model.pt")
    assert shape == (1, 8, 8)  # learned from the clients' replies
    # The slowest collaborator's work is its train and its evaluate handler together.
    round_ = json.loads((settings.model_dir / "metrics.json").read_text())["rounds"][0]
    spans = round_["spans"]
    assert all(set(s) == {"train", "evaluate"} for s in spans.values()) and set(spans) == {"alpha", "beta"}
    assert all(s["train"][2] <= s["evaluate"][0] for s in spans.values())  # evaluated after the update came in
    work = max(sum(end - began for began, end, _ in s.values()) for s in spans.values())
    assert round_["seconds"]["client_max"] == pytest.approx(work, abs=0.002)


def test_a_node_that_disconnects_is_left_out_while_the_others_meet_the_minimum(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta", "gamma"], disconnect_at_round={"beta": 2}))
    settings = _settings(tmp_path, partitions, num_rounds=3)

    _run(grid, settings)

    events = _events(settings.model_dir)
    rounds = [e for e in events if e["event"] == "round"]
    assert [r["participants"] for r in rounds] == [
        ["alpha", "beta", "gamma"],
        ["alpha", "gamma"],
        ["alpha", "gamma"],
    ]
    assert [r.get("dropped_clusters", []) for r in rounds] == [[], ["beta"], []]
    assert set(rounds[1]["received_bytes"]) == {"alpha", "gamma"}
    assert events[-1]["event"] == "completed"


def test_a_node_that_stops_replying_mid_round_is_dropped_after_the_timeout(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta", "gamma"], silent_at_round={"gamma": 2}))
    settings = _settings(tmp_path, partitions, round_timeout=120.0)

    _run(grid, settings)

    second = [e for e in _events(settings.model_dir) if e["event"] == "round"][1]
    assert second["participants"] == ["alpha", "beta"]
    assert second["dropped"] == ["gamma: no reply within 120 s"]
    assert grid.now >= 120


def test_the_run_fails_with_a_reason_when_a_dropout_leaves_too_few(tmp_path: Path, partitions: dict[str, Path]) -> None:
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta"], silent_at_round={"beta": 2}))
    settings = _settings(tmp_path, partitions, num_rounds=3, round_timeout=300.0)

    with pytest.raises(FederationError) as raised:
        _run(grid, settings)

    reason = str(raised.value)
    assert reason.startswith("round 2: only 1 of the 2 required clients replied to training within 300 s")
    assert "beta: no reply within 300 s" in reason
    events = _events(settings.model_dir)
    assert [e["event"] for e in events] == ["started", "round", "failed"]
    assert events[-1]["reason"] == reason
    assert not (settings.model_dir / "model.pt").exists()
    assert json.loads((settings.model_dir / "metrics.json").read_text())["failure"] == reason


def test_a_node_disconnecting_mid_round_is_noticed_before_the_timeout(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    class DisconnectingGrid(FakeGrid):
        """beta receives round 2's message, then drops off the connected set without replying."""

        def get_node_ids(self) -> list[int]:
            ids = super().get_node_ids()
            beta = self.nodes[101]
            return [i for i in ids if not (i == 101 and beta.received.count("train") >= 2)]

    nodes = _nodes(partitions, ["alpha", "beta"], silent_at_round={"beta": 2})
    grid = DisconnectingGrid(nodes)
    settings = _settings(tmp_path, partitions, num_rounds=2, round_timeout=300.0)

    with pytest.raises(FederationError, match=r"round 2: only 1 of the 2 .* beta: disconnected before replying"):
        _run(grid, settings)
    assert grid.now < 10  # noticed by the liveness check, long before the 300 s timeout


def test_too_few_connected_nodes_fail_after_the_round_timeout(tmp_path: Path, partitions: dict[str, Path]) -> None:
    grid = FakeGrid(_nodes(partitions, ["alpha"]))
    settings = _settings(tmp_path, partitions, round_timeout=30.0)

    with pytest.raises(FederationError) as raised:
        _run(grid, settings)

    assert str(raised.value) == "round 1: only 1 of the 2 required clients connected within 30 s"
    assert 30 <= grid.now < 31
    assert grid.nodes[100].received == []
    assert _events(settings.model_dir)[-1] == {
        "event": "failed",
        "reason": str(raised.value),
        "time": ANY_TIME,
    }


class _AnyTime:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.endswith("Z") and "T" in other


ANY_TIME: Any = _AnyTime()


def test_a_missing_data_path_is_reported_with_path_and_cluster(tmp_path: Path, partitions: dict[str, Path]) -> None:
    nodes = _nodes(partitions, ["alpha", "beta", "gamma"])
    nodes[1].data_path = str(tmp_path / "nowhere")
    grid = FakeGrid(nodes)
    settings = _settings(tmp_path, partitions, num_rounds=1)

    _run(grid, settings)
    (event,) = [e for e in _events(settings.model_dir) if e["event"] == "round"]
    assert event["participants"] == ["alpha", "gamma"]
    assert event["dropped"] == [f"cluster 'beta': data path '{tmp_path / 'nowhere'}' does not exist"]

    strict = _settings(tmp_path / "strict", partitions, num_rounds=1, min_available_clients=3)
    with pytest.raises(FederationError, match=r"only 2 of the 3 required .*cluster 'beta': data path .*nowhere"):
        _run(FakeGrid(nodes), strict)


def test_fraction_train_samples_a_share_of_the_nodes(tmp_path: Path, partitions: dict[str, Path]) -> None:
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta", "gamma", "delta"]))
    settings = _settings(tmp_path, partitions, fraction_train=0.5, min_available_clients=1, num_rounds=3)

    _run(grid, settings)

    rounds = [e for e in _events(settings.model_dir) if e["event"] == "round"]
    assert [len(r["participants"]) for r in rounds] == [2, 2, 2]
    assert sum(len(n.received) for n in grid.nodes.values()) == 6


def test_fedprox_sends_the_proximal_term_and_fedavg_sends_none(tmp_path: Path, partitions: dict[str, Path]) -> None:
    seen: list[float] = []

    class RecordingGrid(FakeGrid):
        def push_messages(self, messages: Iterable[Message]) -> list[str]:
            messages = list(messages)
            seen.extend(float(m.content.config_records["config"]["proximal-mu"]) for m in messages)  # type: ignore[arg-type]
            return super().push_messages(messages)

    for strategy, mu in (("fedprox", 0.5), ("fedavg", 0.5)):
        grid = RecordingGrid(_nodes(partitions, ["alpha", "beta"]))
        _run(grid, _settings(tmp_path / strategy, partitions, num_rounds=1, strategy=strategy, proximal_mu=mu))
    assert seen == [0.5, 0.5, 0.0, 0.0]


def test_run_config_is_read_and_checked() -> None:
    config = {
        "num-rounds": 5,
        "strategy": "fedprox",
        "proximal-mu": 0.1,
        "local-epochs": 2,
        "learning-rate": 0.05,
        "batch-size": 32,
        "fraction-train": 1.0,
        "min-available-clients": 2,
        "round-timeout": 300,
        "model-dir": "/tmp/m",
        "test-data": "",
        "seed": 7,
    }
    settings = Settings.from_run_config(config)
    assert (settings.num_rounds, settings.strategy, settings.round_timeout, settings.seed) == (
        5,
        "fedprox",
        300,
        7,
    )
    assert settings.model_dir == Path("/tmp/m")

    with pytest.raises(FederationError, match=r"run config 'strategy': expected 'fedavg' or 'fedprox', got 'sgd'"):
        Settings.from_run_config({**config, "strategy": "sgd"})
    with pytest.raises(FederationError, match=r"run config 'num-rounds': expected int, got 2.5"):
        Settings.from_run_config({**config, "num-rounds": 2.5})
    with pytest.raises(FederationError, match=r"run config: expected key 'model-dir', it is missing"):
        Settings.from_run_config({k: v for k, v in config.items() if k != "model-dir"})


def test_the_server_app_entry_point_runs_the_rounds(tmp_path: Path, partitions: dict[str, Path]) -> None:
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta"]))
    context = Context(
        run_id=1,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config={
            "num-rounds": 1,
            "model-dir": str(tmp_path / "model"),
            "test-data": str(partitions["test"]),
            "round-timeout": 60,
            "min-available-clients": 2,
        },
    )
    server_app.app(grid, context)
    assert _events(tmp_path / "model")[-1]["event"] == "completed"


def test_a_bad_run_config_is_reported_as_a_failure(tmp_path: Path) -> None:
    context = Context(
        run_id=1,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config={"num-rounds": 0, "model-dir": str(tmp_path / "model")},
    )
    with pytest.raises(FederationError):
        server_app.app(FakeGrid([]), context)
    assert _events(tmp_path / "model")[-1]["reason"] == "run config 'num-rounds': expected at least 1, got 0"


def test_test_data_that_cannot_be_read_fails_the_run_at_once(tmp_path: Path, partitions: dict[str, Path]) -> None:
    grid = FakeGrid(_nodes(partitions, ["alpha", "beta"]))
    settings = _settings(tmp_path, partitions, test_data=str(tmp_path / "missing.npz"))
    with pytest.raises(FederationError, match=r"^test-data: data path '.*missing.npz' does not exist$"):
        _run(grid, settings)
    assert all(node.received == [] for node in grid.nodes.values())


def test_clients_with_different_image_sizes_fail_the_round(tmp_path: Path, partitions: dict[str, Path]) -> None:
    big = tmp_path / "mnist"
    rng = np.random.default_rng(1)
    write_partition(
        big / "digits.npz",
        rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 20, dtype=np.uint8),
    )
    nodes = [*_nodes(partitions, ["alpha"]), FakeNode(200, "mnist-lab", str(big))]
    settings = _settings(tmp_path, partitions, test_data="", num_rounds=1)
    with pytest.raises(FederationError, match=r"round 1: .*different sizes \(alpha 8x8, mnist-lab 28x28\)"):
        _run(FakeGrid(nodes), settings)
