"""A model's arrays travel packed as one Flower Array: fewer Flower objects (each one HTTPS request per hop),
the same tensors at the other end, and never where a Flower mod on the ClientApp reads them.

Objects are counted with Flower's own ``get_all_nested_objects``, the set its push and pull send one by one.
The whole path runs in every real local federation (`tests/fleet/federation/test_local.py`)."""

# ruff: noqa: F811  (the fixtures `partitions` and `_task_identity` are test_server_app's, imported by name)

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fleet.app.packing import ARRAYS, LAYOUT, PackingError, is_packed, pack, unpack
from fleet.app.task import build_model
from tests.fleet.app.test_privacy import _dp
from tests.fleet.app.test_server_app import (
    FakeGrid,
    _nodes,
    _run,
    _settings,
    _task_identity,  # noqa: F401
    partitions,  # noqa: F401
)


def _content(state: dict[str, torch.Tensor]) -> RecordDict:
    return RecordDict({ARRAYS: ArrayRecord(state), "config": ConfigRecord({"server-round": 1})})


def test_packing_keeps_every_tensor_exactly_names_order_dtype_and_shape() -> None:
    state = dict(build_model((1, 8, 8), seed=0).state_dict())
    state["steps"] = torch.tensor(7, dtype=torch.int64)  # a 0-d integer buffer, as BatchNorm keeps
    state["transposed"] = torch.arange(6.0, dtype=torch.float64).reshape(2, 3).T  # not contiguous
    back = unpack(pack(_content(state)))
    assert list(back.keys()) == [ARRAYS, "config"]
    unpacked = back.array_records[ARRAYS].to_torch_state_dict()
    assert list(unpacked) == list(state)
    for name, tensor in state.items():
        assert unpacked[name].dtype == tensor.dtype and unpacked[name].shape == tensor.shape
        assert torch.equal(unpacked[name], tensor)


def test_the_example_models_instruction_is_6_flower_objects_not_19() -> None:
    """Besides the Message itself: 7 requests a hop, not 20."""
    content = _content(build_model((1, 8, 8), seed=0).state_dict())
    assert len(get_all_nested_objects(content)) == 19  # 8 tensors: an Array and an ArrayChunk each
    assert len(get_all_nested_objects(pack(content))) == 6  # RecordDict, 2 records, Array, ArrayChunk, layout


def test_an_empty_record_is_packed_so_the_reply_is_too_and_content_without_one_is_left_as_it_is() -> None:
    empty = RecordDict({ARRAYS: ArrayRecord(), "config": ConfigRecord({"server-round": 1})})
    packed = pack(empty)  # the first round's instruction without test data: no global model yet
    assert is_packed(packed) and len(unpack(packed).array_records[ARRAYS]) == 0
    metrics_only = RecordDict({"metrics": MetricRecord({"accuracy": 0.5})})
    assert pack(metrics_only) is metrics_only and unpack(metrics_only) is metrics_only


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("short", r"arrays-layout describes \d+ bytes, the packed array holds \d+"),
        ("layout", r"arrays-layout: expected a JSON list of \[name, dtype, shape\]"),
        ("two arrays", r"must carry one array 'packed'"),
    ],
)
def test_a_packed_record_that_does_not_match_its_layout_is_refused(breakage: str, expected: str) -> None:
    packed = pack(_content(build_model((1, 8, 8), seed=0).state_dict()))
    if breakage == "short":
        blob = packed.array_records[ARRAYS]["packed"].numpy()
        packed[ARRAYS] = ArrayRecord({"packed": Array(blob[:-4].copy())})
    elif breakage == "layout":
        packed[LAYOUT] = ConfigRecord({"layout": "not json"})
    else:
        packed[ARRAYS] = ArrayRecord({"packed": Array(np.zeros(4, np.uint8)), "other": Array(np.zeros(4, np.uint8))})
    with pytest.raises(PackingError, match=expected):
        unpack(packed)


class _RecordingGrid(FakeGrid):
    """The in-memory Grid, keeping what went each way."""

    def __init__(self, nodes: Iterable[object]) -> None:
        super().__init__(nodes)  # type: ignore[arg-type]
        self.pushed: list[Message] = []
        self.replies: list[Message] = []
        self.arrived: list[tuple[bool, int]] = []
        """Each reply as it came: packed, and its Flower objects."""

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        self.pushed += messages
        return super().push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        replies = super().pull_messages(message_ids)
        self.replies += [reply for reply in replies if not reply.has_error()]
        self.arrived += [
            (is_packed(reply.content), len(get_all_nested_objects(reply.content)))
            for reply in replies
            if not reply.has_error()
        ]
        return replies


def test_a_round_sends_instructions_and_updates_packed_and_aggregates_the_tensors(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    grid = _RecordingGrid(_nodes(partitions, ["alpha", "beta"]))
    _run(grid, _settings(tmp_path, partitions, num_rounds=1))
    assert grid.pushed and all(is_packed(message.content) for message in grid.pushed)
    assert all(len(get_all_nested_objects(message.content)) == 6 for message in grid.pushed)
    # What the ClientApp sent was packed; the ServerApp read the tensors.
    assert grid.arrived == [(True, 7), (True, 7)]  # 19 without packing, plus the metrics and info records
    assert all(not is_packed(reply.content) for reply in grid.replies)
    names = list(build_model((1, 8, 8), seed=0).state_dict())
    assert all(list(reply.content.array_records[ARRAYS].keys()) == names for reply in grid.replies)
    assert (tmp_path / "model" / "model.pt").exists()


def test_without_a_global_model_yet_the_updates_still_come_packed(tmp_path: Path, partitions: dict[str, Path]) -> None:
    grid = _RecordingGrid(_nodes(partitions, ["alpha", "beta"]))
    _run(grid, _settings(tmp_path, partitions, num_rounds=1, test_data=None))  # round 1 sends no arrays
    assert grid.pushed and all(is_packed(message.content) for message in grid.pushed)
    # The train replies carry the updates, packed; the evaluate replies carry metrics only.
    assert [packed for packed, _ in grid.arrived] == [True, True, False, False]


def test_client_side_clipping_gets_the_tensors_its_flower_mod_reads(
    tmp_path: Path, partitions: dict[str, Path]
) -> None:
    grid = _RecordingGrid(_nodes(partitions, ["alpha", "beta", "gamma"]))
    dp = _dp(side="client", clipping_norm=1.0, noise_multiplier=0.01)
    _run(grid, _settings(tmp_path, partitions, num_rounds=1, differential_privacy=dp))
    assert grid.pushed and not any(is_packed(message.content) for message in grid.pushed)
    assert [packed for packed, _ in grid.arrived] == [False, False, False]
