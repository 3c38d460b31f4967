"""Secure aggregation with Flower's SecAgg+ (``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on the
collaborators): each collaborator quantises its update, masks it with pairwise masks (which cancel in the sum)
and a private one, and secret-shares the masks' seeds among its neighbours; the aggregator sums the masked
vectors and removes the masks with the shares, so it learns the mean of the updates and none of them.

Flower 1.41 runs SecAgg+ on its legacy path only (a ``LegacyContext`` with a legacy strategy): here the
workflow runs one round at a time inside the ServerApp's own loop, over the nodes that loop sampled, with a
legacy FedAvg whose only work is to hand the already averaged vector back. Every collaborator weighs 1
(``num_examples`` 1, ``max_weight`` 1): a count of examples above SecAgg+'s ``max_weight`` overflows its
quantisation, and the counts would say how much data each cluster holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import NDArrays, Scalar
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid
from flwr.supercore.run import Run

WEIGHT = 1
"""Each collaborator's weight in the secure mean (and SecAgg+'s ``max_weight``)."""


@dataclass
class SecureRound:
    """What one SecAgg+ round gave the aggregator: the mean, and each collaborator's clear metrics."""

    arrays: NDArrays
    metrics: list[dict[str, Scalar]] = field(default_factory=list)


class _RoundGrid(Grid):
    """The ServerApp's Grid, with ``send_and_receive`` replaced by the ServerApp's own exchange (short polls,
    the round timeout, disconnected nodes given up on at once) instead of Flower's 3 s polls."""

    def __init__(self, grid: Grid, exchange: Callable[[list[Message]], list[Message]]) -> None:
        self._grid = grid
        self._exchange = exchange

    @property
    def run(self) -> Run:
        return self._grid.run

    def set_run(self, run: Run) -> None:  # pragma: no cover - the ServerApp's grid has its run already
        self._grid.set_run(run)

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self._exchange(list(messages))


def secure_round(
    grid: Grid,
    exchange: Callable[[list[Message]], list[Message]],
    server_round: int,
    nodes: Sequence[int],
    parameters: ArrayRecord,
    config: dict[str, Scalar],
    shares: int,
    threshold: int,
) -> SecureRound | None:
    """Run SecAgg+ over ``nodes`` for one round; None when the protocol halted (too few collaborators kept
    answering to rebuild the masks). ``parameters``: the global model (empty: the collaborators start from the
    seeded model); ``config``: the train instruction's settings."""
    collected: list[dict[str, Scalar]] = []

    def keep_metrics(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
        collected.extend(dict(metrics) for _, metrics in results)
        return {}

    strategy = LegacyFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=len(nodes),
        min_available_clients=len(nodes),
        on_fit_config_fn=lambda _: dict(config),
        fit_metrics_aggregation_fn=keep_metrics,
    )
    manager = SimpleClientManager()
    for node in nodes:
        manager.register(GridClientProxy(node, grid, grid.run.run_id))
    context = LegacyContext(
        Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=server_round),
        strategy=strategy,
        client_manager=manager,
    )
    context.state.array_records[MAIN_PARAMS_RECORD] = parameters
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
    workflow = SecAggPlusWorkflow(shares, threshold, max_weight=float(WEIGHT))
    workflow(_RoundGrid(grid, exchange), context)
    aggregated = context.state.array_records[MAIN_PARAMS_RECORD]
    if aggregated is parameters:  # the workflow writes a new record only once it unmasked the sum
        return None
    return SecureRound(aggregated.to_numpy_ndarrays(), collected)


def masked_bytes(reply: Message) -> int:
    """The size of the masked update a SecAgg+ reply carried."""
    record = reply.content.config_records.get(RECORD_KEY_CONFIGS)
    values: Any = record.get(SecAggKey.MASKED_PARAMETERS, []) if record is not None else []
    return sum(len(value) for value in values if isinstance(value, bytes))
