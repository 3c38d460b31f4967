"""The ClientApp: its import path stays light, its replies carry what the ServerApp reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fleet.app import client_app
from fleet.app.data import write_partition
from fleet.app.task import build_model


def test_the_client_app_imports_neither_the_renderer_nor_heavy_libraries() -> None:
    probe = (
        "import json, sys\n"
        "import fleet.app.client_app\n"
        "heavy = ('cdk8s', 'render', 'sklearn', 'matplotlib', 'fleet.models', 'fleet.repository')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == []


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _context(data_path: str, cluster: str = "eu-lab", node_id: int = 7) -> Context:
    return Context(
        run_id=1,
        node_id=node_id,
        node_config={"data-path": data_path, "cluster-name": cluster},
        state=RecordDict(),
        run_config={},
    )


def _instruction(message_type: str, arrays: ArrayRecord) -> Message:
    config = ConfigRecord(
        {
            "server-round": 1,
            "local-epochs": 1,
            "learning-rate": 0.05,
            "batch-size": 16,
            "proximal-mu": 0.0,
            "seed": 0,
        }
    )
    message = Message(RecordDict({"arrays": arrays, "config": config}), 7, message_type, group_id="1")
    message.metadata.__dict__["_message_id"] = "m1"  # what the SuperLink assigns
    return message


@pytest.fixture
def partition(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    write_partition(
        folder / "digits.npz",
        rng.integers(0, 255, (40, 8, 8), dtype=np.uint8),
        rng.integers(0, 10, 40, dtype=np.uint8),
    )
    return folder


def test_train_replies_with_weights_examples_loss_and_cluster(partition: Path) -> None:
    start = build_model((1, 8, 8), seed=0)
    reply = client_app.app(_instruction(MessageType.TRAIN, ArrayRecord(start.state_dict())), _context(str(partition)))

    assert not reply.has_error()
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == 40
    assert float(metrics["train_loss"]) > 0  # type: ignore[arg-type]
    info = reply.content.config_records["info"]
    assert info["cluster-name"] == "eu-lab"
    assert list(info["input-shape"]) == [1, 8, 8]  # type: ignore[call-overload]
    trained = reply.content.array_records["arrays"].to_torch_state_dict()
    assert list(trained) == list(start.state_dict())
    assert any(not np.array_equal(trained[k].numpy(), v.numpy()) for k, v in start.state_dict().items())


def test_the_same_cluster_trains_the_same_weights_in_every_run(partition: Path) -> None:
    """Node ids are random per run; the shuffle follows the cluster, so a job's model is reproducible."""

    def trained(cluster: str, node_id: int) -> dict[str, np.ndarray]:
        arrays = ArrayRecord(build_model((1, 8, 8), seed=0).state_dict())
        reply = client_app.app(_instruction(MessageType.TRAIN, arrays), _context(str(partition), cluster, node_id))
        return {k: v.numpy() for k, v in reply.content.array_records["arrays"].to_torch_state_dict().items()}

    first, again = trained("eu-lab", 7), trained("eu-lab", 123_456_789)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    other = trained("us-lab", 7)
    assert any(not np.array_equal(first[k], other[k]) for k in first)


def test_first_round_without_weights_starts_from_the_shared_seed(partition: Path) -> None:
    reply = client_app.app(_instruction(MessageType.TRAIN, ArrayRecord()), _context(str(partition)))
    assert not reply.has_error()
    assert len(reply.content.array_records["arrays"]) == len(build_model((1, 8, 8)).state_dict())


def test_evaluate_replies_with_accuracy(partition: Path) -> None:
    arrays = ArrayRecord(build_model((1, 8, 8)).state_dict())
    reply = client_app.app(_instruction(MessageType.EVALUATE, arrays), _context(str(partition)))
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == 40
    assert 0 <= float(metrics["accuracy"]) <= 1  # type: ignore[arg-type]


def test_missing_data_becomes_an_error_reply_naming_path_and_cluster(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    reply = client_app.app(_instruction(MessageType.TRAIN, ArrayRecord()), _context(str(missing), "eu-west"))
    assert reply.has_error()
    assert reply.error.code == client_app.DATA_ERROR_CODE
    assert reply.error.reason == f"cluster 'eu-west': data path '{missing}' does not exist"


def test_data_that_does_not_fit_the_global_model_is_an_error_reply(partition: Path) -> None:
    arrays = ArrayRecord(build_model((1, 28, 28)).state_dict())
    reply = client_app.app(_instruction(MessageType.TRAIN, arrays), _context(str(partition)))
    assert reply.has_error()
    assert "cluster 'eu-lab': its images (8x8) do not fit the global model" in str(reply.error.reason)
