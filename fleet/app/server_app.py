"""The ServerApp: runs the federated rounds over Flower's Grid and writes the model, metrics and progress.

Rather than a Flower strategy (which polls the SuperLink every 3 s), `run_federation` drives its own push/pull
loop on the public Grid API with short sleeps: per round it waits for ``min-available-clients`` connected
nodes, samples ``fraction-train`` of them, pushes a train message to each, pulls the replies, and averages the
returned weights by number of examples (FedAvg; FedProx averages the same way, its proximal term acts on the
clients). With ``test-data`` the new global model is evaluated here, on the held-out split; without it the
round's participants evaluate it in a second round trip (federated evaluation).

Faults never hang a run: a node that stops replying, disconnects, or replies with an error is left out of the
round; the round goes on if the replies still meet ``min-available-clients``, otherwise the run fails with a
reason that says which round, how many replied, who did not and why. Every wait is bounded by
``round-timeout``.

Written into ``model-dir`` (the contract with ``fleet run``):

- ``progress.jsonl``: one JSON object per line, flushed at once: ``{"event": "started", "rounds": N,
  "min_available_clients": M, "round_timeout": T}``, ``{"event": "round", "round": n, "participants": [...],
  "metrics": {...}, "seconds": S, "received_bytes": {cluster: B}}`` (with ``"dropped"``, a list of reasons, and
  ``"dropped_clusters"``, the known names among them, when some sampled node was left out), then
  ``{"event": "completed", "metrics": {...}}`` or ``{"event": "failed", "reason": "..."}``; each with ``"time"``
  (RFC 3339, UTC). The aggregator's Prometheus metrics are made from these lines (`fleet.observability`).
- ``checkpoints/round-<n>.pt`` after each round and ``model.pt`` at the end (`fleet.app.task.save_model`).
- ``metrics.json``: the settings, every round's metrics, participants and where its time went (``seconds``:
  the round, its steps, ``client_max``, the slowest collaborator's train plus evaluate handlers, and
  ``overhead``, the round less that; ``spans``: each collaborator's handlers as ``[began, ended, received]``
  in seconds from the round's start, the ClientApp's own Unix times beside the ServerApp's), and the final
  metrics.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from numpy.typing import NDArray

from fleet.app.data import DataError, Dataset, load_dataset
from fleet.app.files import METRICS_FILE, append_event, now, write_metrics
from fleet.app.packing import PackingError, is_packed, pack, unpack
from fleet.app.privacy import DifferentialPrivacy, DifferentialPrivacySettings, PrivacyError, settings_from_run_config
from fleet.app.resume import ResumeError, ResumePoint
from fleet.app.secure_aggregation import SecureRound, masked_bytes, secure_round
from fleet.app.task import aggregate, build_model, evaluate, save_model

MODEL_FILE = "model.pt"
CHECKPOINTS = "checkpoints"

app = ServerApp()


class FederationError(Exception):
    """The run cannot go on; the message is the reason written to ``progress.jsonl``."""


@dataclass(frozen=True)
class Settings:
    """The run config keys ``fleet run`` sets from the job definition."""

    num_rounds: int
    model_dir: Path
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    local_epochs: int = 1
    learning_rate: float = 0.05
    batch_size: int = 32
    fraction_train: float = 1.0
    min_available_clients: int = 2
    round_timeout: float = 600.0
    test_data: str = ""
    seed: int = 0
    differential_privacy: DifferentialPrivacySettings | None = None
    secure_shares: int = 0
    """SecAgg+'s shares per collaborator; 0: no secure aggregation."""
    secure_threshold: int = 0

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read and check the kebab-case run config; `FederationError` names a bad or missing key."""

        def value(key: str, kind: type, default: Any = None) -> Any:
            if key not in config:
                if default is None:
                    raise FederationError(f"run config: expected key {key!r}, it is missing")
                return default
            raw = config[key]
            try:
                if kind is int and (isinstance(raw, bool) or float(raw) != int(float(raw))):
                    raise ValueError
                return kind(raw)
            except (TypeError, ValueError):
                raise FederationError(f"run config {key!r}: expected {kind.__name__}, got {raw!r}") from None

        settings = cls(
            num_rounds=value("num-rounds", int),
            model_dir=Path(value("model-dir", str)),
            strategy=value("strategy", str, "fedavg"),
            proximal_mu=value("proximal-mu", float, 0.0),
            local_epochs=value("local-epochs", int, 1),
            learning_rate=value("learning-rate", float, 0.05),
            batch_size=value("batch-size", int, 32),
            fraction_train=value("fraction-train", float, 1.0),
            min_available_clients=value("min-available-clients", int, 2),
            round_timeout=value("round-timeout", float, 600.0),
            test_data=value("test-data", str, ""),
            seed=value("seed", int, 0),
            differential_privacy=_privacy_settings(config),
            secure_shares=value("secagg-shares", int, 0),
            secure_threshold=value("secagg-reconstruction-threshold", int, 0),
        )
        dp = settings.differential_privacy
        checks = [
            (settings.num_rounds >= 1, "num-rounds", "at least 1"),
            (settings.strategy in ("fedavg", "fedprox"), "strategy", "'fedavg' or 'fedprox'"),
            (settings.proximal_mu >= 0, "proximal-mu", "at least 0"),
            (settings.local_epochs >= 1, "local-epochs", "at least 1"),
            (settings.learning_rate > 0, "learning-rate", "greater than 0"),
            (settings.batch_size >= 1, "batch-size", "at least 1"),
            (0 < settings.fraction_train <= 1, "fraction-train", "in (0, 1]"),
            (settings.min_available_clients >= 1, "min-available-clients", "at least 1"),
            (settings.round_timeout > 0, "round-timeout", "greater than 0"),
            (str(settings.model_dir) != "", "model-dir", "a folder"),
            (settings.secure_shares == 0 or settings.secure_shares >= 3, "secagg-shares", "0 or at least 3"),
            (
                settings.secure_shares == 0 or 2 <= settings.secure_threshold < settings.secure_shares,
                "secagg-reconstruction-threshold",
                "at least 2 and below secagg-shares",
            ),
            (dp is None or dp.side in ("server", "client"), "dp-side", "'server' or 'client'"),
            (dp is None or dp.clipping in ("fixed", "adaptive"), "dp-clipping", "'fixed' or 'adaptive'"),
            (dp is None or dp.clipping_norm > 0, "dp-clipping-norm", "greater than 0"),
            (dp is None or 0 < dp.target_delta < 1, "dp-target-delta", "in (0, 1)"),
            (dp is None or dp.population >= 1, "population", "at least 1"),
            (dp is None or not settings.secure_shares, "secagg-shares", "0 with differential privacy"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise FederationError(f"run config {key!r}: expected {expected}, got {config.get(key)!r}")
        return settings


def _privacy_settings(config: Mapping[str, Any]) -> DifferentialPrivacySettings | None:
    try:
        return settings_from_run_config(config)
    except (TypeError, ValueError) as error:
        raise FederationError(f"run config dp-*: expected numbers where numbers go: {error}") from None


@app.main()
def main(grid: Grid, context: Context) -> None:
    model_dir = Path(str(context.run_config.get("model-dir", ".")))
    try:
        settings = Settings.from_run_config(context.run_config)
    except FederationError as error:
        Progress(model_dir).failed(str(error))
        raise
    try:
        resume = ResumePoint.from_run_config(context.run_config)
    except ResumeError as error:
        Progress(model_dir).failed(str(error))
        raise
    run_federation(grid, settings, resume=resume)


# --- the rounds ---------------------------------------------------------------------------------------------


@dataclass
class _Replies:
    """What came back from one push: replies by node, and why the others are missing."""

    ok: dict[int, Message] = field(default_factory=dict)
    missing: dict[int, str] = field(default_factory=dict)
    received_at: dict[int, float] = field(default_factory=dict)
    """Unix time at which each reply in ``ok`` was pulled."""


@dataclass
class _Federation:
    grid: Grid
    settings: Settings
    progress: Progress
    poll_interval: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    names: dict[int, str] = field(default_factory=dict)
    """node id -> cluster name, learned from replies."""
    input_shape: tuple[int, int, int] | None = None
    test: Dataset | None = None
    privacy: DifferentialPrivacy | None = None

    def name(self, node: int) -> str:
        return self.names.get(node, f"node {node}")


def run_federation(
    grid: Grid,
    settings: Settings,
    *,
    poll_interval: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    resume: ResumePoint | None = None,
) -> dict[str, float]:
    """Run every round (from ``resume``'s, when a lost run is resumed); write progress, checkpoints, metrics and
    the final model. Returns the final metrics.

    Raises `FederationError` (after writing the ``failed`` event) when the run cannot go on.
    """
    progress = Progress(settings.model_dir)
    federation = _Federation(grid, settings, progress, poll_interval, clock, sleep)
    try:
        progress.started(settings, resume)
        return _rounds(federation, resume)
    except FederationError as error:
        progress.failed(str(error))
        raise
    except Exception as error:
        progress.failed(f"the ServerApp stopped: {type(error).__name__}: {error}")
        raise


def _rounds(federation: _Federation, resume: ResumePoint | None = None) -> dict[str, float]:
    settings = federation.settings
    weights: OrderedDict[str, NDArray[Any]] | None = None
    if settings.test_data:
        try:
            federation.test = load_dataset(settings.test_data)
        except DataError as error:
            raise FederationError(f"test-data: {error}") from None
        federation.input_shape = federation.test.input_shape
        model = build_model(federation.input_shape, seed=settings.seed)
        weights = OrderedDict((k, v.numpy().copy()) for k, v in model.state_dict().items())

    if settings.differential_privacy is not None:
        federation.privacy = DifferentialPrivacy(settings.differential_privacy)
    metrics: dict[str, float] = {}
    first_round = 1
    if resume is not None:
        if settings.differential_privacy is not None:
            # The accountant lived in the lost ServerApp: a new one would under-count the epsilon spent.
            raise FederationError(
                f"cannot resume at round {resume.first_round} with differential privacy: the privacy spent in the "
                f"lost run's {resume.last_round} round(s) was not kept, and the budget would be counted from zero"
            )
        # The lost run's last checkpoint: its weights and shape, as its next round would have started.
        try:
            weights, federation.input_shape = resume.weights()
        except ResumeError as error:
            raise FederationError(str(error)) from None
        first_round = resume.first_round
    for server_round in range(first_round, settings.num_rounds + 1):
        started, began = federation.clock(), time.time()
        nodes = _wait_for_nodes(federation, server_round)
        sampled = _sample(nodes, settings, server_round)
        weights = _before_private_round(federation, server_round, sampled, weights)
        pushed = federation.clock()
        replies, secure = _train_exchange(federation, server_round, sampled, weights)
        exchanged = federation.clock()
        if len(replies.ok) < settings.min_available_clients:
            raise FederationError(_too_few_replies(federation, server_round, "training", len(sampled), replies))
        weights, train_loss = _aggregate(federation, server_round, replies.ok, weights, secure)
        aggregated = federation.clock()
        evaluation, evaluated = _evaluate(federation, server_round, weights, replies)
        metrics = {"train_loss": train_loss, **evaluation, **_privacy_spent(federation)}
        evaluated_at = federation.clock()
        participants = sorted(federation.name(node) for node in replies.ok)
        dropped = [_why(federation, node, reason) for node, reason in sorted(replies.missing.items())]
        lost = sorted(federation.names[node] for node in replies.missing if node in federation.names)
        _save(federation, weights, Path(CHECKPOINTS) / f"round-{server_round}.pt")
        spans = _spans(federation, began, {"train": replies, "evaluate": evaluated})
        client_max = max((sum(end - start for start, end, _ in steps.values()) for steps in spans.values()), default=0)
        seconds = federation.clock() - started
        timing = {
            "round": seconds,
            "waiting_for_nodes": pushed - started,
            "train_exchange": exchanged - pushed,
            "aggregate": aggregated - exchanged,
            "evaluate": evaluated_at - aggregated,
            "client_training_max": max((_train_seconds(reply) for reply in replies.ok.values()), default=0.0),
        }
        if spans:  # a ClientApp of fleet's own: its handlers say how long they took
            timing.update(client_max=client_max, overhead=seconds - client_max)
        received = {federation.name(node): _array_bytes(reply) for node, reply in replies.ok.items()}
        federation.progress.round(server_round, participants, metrics, dropped, timing, received, lost, spans)

    assert weights is not None  # at least one round ran
    _save(federation, weights, Path(MODEL_FILE))
    federation.progress.completed(metrics, publish=lambda: _publish(federation))
    return metrics


def _publish(federation: _Federation) -> None:
    """On the hub with S3 storage, the run's files go to the job's bucket before the run counts as completed:
    a refused upload fails the run with S3's reason (`fleet.app.storage`)."""
    from fleet.app.storage import StorageError, publish_from_environment

    try:
        publish_from_environment(federation.settings.model_dir, federation.grid.run.run_id, os.environ)
    except StorageError as error:
        raise FederationError(f"the run completed, but its files were not published: {error}") from None


def _wait_for_nodes(federation: _Federation, server_round: int) -> list[int]:
    settings = federation.settings
    deadline = federation.clock() + settings.round_timeout
    while True:
        nodes = sorted(federation.grid.get_node_ids())
        if len(nodes) >= settings.min_available_clients:
            return nodes
        if federation.clock() >= deadline:
            raise FederationError(
                f"round {server_round}: only {len(nodes)} of the {settings.min_available_clients} required "
                f"clients connected within {_seconds(settings.round_timeout)} s"
                + (
                    f" (connected: {', '.join(known)})"
                    if (known := [federation.names[n] for n in nodes if n in federation.names])
                    else ""
                )
            )
        federation.sleep(max(federation.poll_interval, 0.2))


def _sample(nodes: list[int], settings: Settings, server_round: int) -> list[int]:
    wanted = max(settings.min_available_clients, math.ceil(settings.fraction_train * len(nodes)))
    if wanted >= len(nodes):
        return nodes
    return sorted(random.Random(settings.seed * 100_003 + server_round).sample(nodes, wanted))


def _exchange(
    federation: _Federation, server_round: int, nodes: list[int], message_type: str, content: RecordDict
) -> _Replies:
    """Push one message to each node and pull the replies until all are in, the nodes are gone, or the round
    times out."""
    settings = federation.settings
    config = content.config_records.get("config")
    if config is None or KEY_CLIPPING_NORM not in config:
        # One array on the wire instead of one per tensor (`fleet.app.packing`): 8 Flower objects a message, not
        # 21, each an HTTPS request on every hop. Flower's clipping mods read the arrays on the ClientApp.
        content = pack(content)
    messages = [
        Message(content, node, message_type, ttl=settings.round_timeout + 60, group_id=str(server_round))
        for node in nodes
    ]
    return _exchange_messages(federation, messages)


def _exchange_messages(federation: _Federation, messages: list[Message]) -> _Replies:
    """Push the messages and pull their replies until all are in, their nodes are gone, or the round times
    out."""
    settings = federation.settings
    nodes = [message.metadata.dst_node_id for message in messages]
    pushed = list(federation.grid.push_messages(messages))
    result = _Replies()
    waiting: dict[str, int] = {}
    for node, message_id in zip(nodes, pushed, strict=True):
        if message_id:
            waiting[message_id] = node
        else:
            result.missing[node] = "the SuperLink refused the message"
    deadline = federation.clock() + settings.round_timeout
    next_liveness_check = federation.clock() + 1.0
    while waiting:
        for reply in federation.grid.pull_messages(list(waiting)):
            if reply.metadata.reply_to_message_id not in waiting:
                continue
            node = waiting.pop(reply.metadata.reply_to_message_id)
            if not reply.has_error() and is_packed(reply.content):
                try:
                    reply.content = unpack(reply.content)
                except PackingError as error:
                    result.missing[node] = f"its reply's arrays could not be unpacked: {error}"
                    continue
            if reply.has_error():
                result.missing[node] = _error_reason(reply)
            else:
                result.ok[node] = reply
                result.received_at[node] = time.time()
                _learn_name(federation, node, reply)
        if not waiting:
            break
        now = federation.clock()
        if now >= deadline:
            for node in waiting.values():
                result.missing[node] = f"no reply within {_seconds(settings.round_timeout)} s"
            break
        if now >= next_liveness_check:
            # The SuperLink answers for a node it sees go offline, but only after its heartbeat patience;
            # a node missing from the connected set is given up on at once.
            connected = set(federation.grid.get_node_ids())
            for message_id, node in list(waiting.items()):
                if node not in connected:
                    del waiting[message_id]
                    result.missing[node] = "disconnected before replying"
            next_liveness_check = now + 1.0
            continue
        federation.sleep(federation.poll_interval)
    return result


def _content(
    settings: Settings, server_round: int, weights: Mapping[str, NDArray[Any]] | None, extra: Mapping[str, Any] = {}
) -> RecordDict:
    """The instruction: the global weights (none before the first aggregation without test data: then the
    clients start from the model the shared seed gives) and the training settings (``extra``: what
    client-side differential privacy adds)."""
    arrays = ArrayRecord()
    if weights is not None:
        arrays = ArrayRecord.from_torch_state_dict(OrderedDict((k, torch.from_numpy(v)) for k, v in weights.items()))
    return RecordDict({"arrays": arrays, "config": ConfigRecord({**_instruction(settings, server_round), **extra})})


def _instruction(settings: Settings, server_round: int) -> dict[str, int | float]:
    return {
        "server-round": server_round,
        "local-epochs": settings.local_epochs,
        "learning-rate": settings.learning_rate,
        "batch-size": settings.batch_size,
        "proximal-mu": settings.proximal_mu if settings.strategy == "fedprox" else 0.0,
        "seed": settings.seed,
    }


# --- privacy ------------------------------------------------------------------------------------------------


def _before_private_round(
    federation: _Federation, server_round: int, sampled: list[int], weights: OrderedDict[str, NDArray[Any]] | None
) -> OrderedDict[str, NDArray[Any]] | None:
    """Under differential privacy: stop before a round the budget does not cover; and give client-side
    clipping the model it clips against (Flower's clipping mods need the global model in every instruction)."""
    privacy = federation.privacy
    if privacy is None:
        return weights
    try:
        privacy.check_budget(server_round, len(sampled))
    except PrivacyError as error:
        raise FederationError(str(error)) from None
    if weights is None and privacy.client_side:
        replies = _exchange(
            federation, server_round, sampled, MessageType.EVALUATE, _content(federation.settings, server_round, None)
        )
        shapes = {shape for reply in replies.ok.values() if (shape := _reported_shape(reply)) is not None}
        federation.input_shape = min(shapes) if shapes else None  # differing sizes fail the round's aggregation
        if federation.input_shape is None:
            raise FederationError(f"round {server_round}: no collaborator reported the shape of its images")
        weights = _seed_weights(federation)
    return weights


def _seed_weights(federation: _Federation) -> OrderedDict[str, NDArray[Any]]:
    """The model every collaborator starts from when the instruction carries none."""
    assert federation.input_shape is not None
    model = build_model(federation.input_shape, seed=federation.settings.seed)
    return OrderedDict((k, v.numpy().copy()) for k, v in model.state_dict().items())


def _train_exchange(
    federation: _Federation, server_round: int, sampled: list[int], weights: Mapping[str, NDArray[Any]] | None
) -> tuple[_Replies, SecureRound | None]:
    """The round's training: the instruction to each sampled node and their updates, or with secure aggregation
    Flower's SecAgg+ over them (the replies are then the masked vectors, and the round gives the mean)."""
    settings = federation.settings
    if not settings.secure_shares:
        extra = federation.privacy.instruction() if federation.privacy is not None else {}
        return _exchange(
            federation, server_round, sampled, MessageType.TRAIN, _content(settings, server_round, weights, extra)
        ), None
    stages: list[_Replies] = []

    def exchange(messages: list[Message]) -> list[Message]:
        stages.append(_exchange_messages(federation, messages))
        return list(stages[-1].ok.values())

    parameters = ArrayRecord([np.asarray(v) for v in weights.values()]) if weights is not None else ArrayRecord()
    nodes, gone = list(sampled), dict[int, str]()
    while True:
        stages.clear()
        result = secure_round(
            federation.grid,
            exchange,
            server_round,
            nodes,
            parameters,
            dict(_instruction(settings, server_round)),
            settings.secure_shares,
            settings.secure_threshold,
        )
        lost = dict(gone)
        for stage in stages:
            for node, reason in stage.missing.items():
                lost.setdefault(node, reason)
        # Flower's SecAgg+ cannot unmask around a collaborator gone before it shared its keys (no neighbour
        # holds a share of it): the round starts again without it, if enough are left.
        before_sharing = stages[0].missing if stages else {}
        survivors = [node for node in nodes if node not in before_sharing]
        if result is None and before_sharing and len(survivors) >= settings.min_available_clients:
            nodes, gone = survivors, gone | before_sharing
            continue
        break
    # The third stage carries the collaborators' masked updates (and, in clear, their metrics).
    replies = _Replies(missing=lost)
    if result is not None:
        replies.ok = {node: reply for node, reply in stages[2].ok.items() if node not in lost}
        replies.received_at = dict(stages[2].received_at)
        return replies, result
    reasons = "; ".join(_why(federation, node, reason) for node, reason in sorted(lost.items()))
    raise FederationError(
        f"round {server_round}: secure aggregation (SecAgg+, {settings.secure_shares} shares, threshold "
        f"{settings.secure_threshold}) could not unmask the sum of {len(sampled)} sampled clients"
        + (f" ({reasons})" if reasons else "")
    )


def _privacy_spent(federation: _Federation) -> dict[str, float]:
    """The privacy spent so far, as round metrics (cumulative epsilon at the target delta)."""
    spent = federation.privacy.spent() if federation.privacy is not None else None
    return {"privacy_epsilon": spent.epsilon, "privacy_delta": spent.delta} if spent is not None else {}


def _aggregate(
    federation: _Federation,
    server_round: int,
    replies: Mapping[int, Message],
    previous: OrderedDict[str, NDArray[Any]] | None = None,
    secure: SecureRound | None = None,
) -> tuple[OrderedDict[str, NDArray[Any]], float]:
    """The new global model and the training loss; ``previous``: the model the round started from (what
    differential privacy clips against); ``secure``: the round's SecAgg+ mean, the only update this side sees."""
    # By cluster name, not by node id (random per run): the sums, and so the model, are the same in every run.
    in_order = sorted(replies.items(), key=lambda item: (federation.name(item[0]), item[0]))
    if secure is not None:
        return _secure_mean(federation, server_round, in_order, secure)
    updates: list[tuple[list[NDArray[Any]], int]] = []
    losses: list[tuple[float, int]] = []
    keys: list[str] | None = None
    shapes: dict[str, tuple[int, ...]] = {}
    for node, reply in in_order:
        info = reply.content.config_records.get("info", ConfigRecord())
        shape = tuple(int(v) for v in info.get("input-shape", []))  # type: ignore[union-attr]
        if shape:
            shapes[federation.name(node)] = shape
    if len(set(shapes.values())) > 1:
        found = ", ".join(f"{name} {'x'.join(map(str, s[1:]))}" for name, s in sorted(shapes.items()))
        raise FederationError(f"round {server_round}: the clusters hold images of different sizes ({found})")
    for node, reply in in_order:
        content = reply.content
        arrays = content.array_records.get("arrays")
        metrics = content.metric_records.get("metrics")
        if arrays is None or metrics is None or "num-examples" not in metrics:
            raise FederationError(
                f"round {server_round}: {federation.name(node)} replied without 'arrays' or 'num-examples'"
            )
        if keys is None:
            keys = list(arrays.keys())
        elif list(arrays.keys()) != keys:
            raise FederationError(f"round {server_round}: {federation.name(node)} replied with another model")
        examples = int(metrics["num-examples"])  # type: ignore[arg-type]
        updates.append((arrays.to_numpy_ndarrays(), examples))
        losses.append((float(metrics.get("train_loss", 0.0)), examples))  # type: ignore[arg-type]
    if federation.input_shape is None and shapes:
        federation.input_shape = next(iter(shapes.values()))  # type: ignore[assignment]
    try:
        averaged = (
            aggregate(updates)
            if federation.privacy is None
            else _private_mean(federation, server_round, in_order, previous)
        )
    except ValueError as error:
        raise FederationError(f"round {server_round}: cannot aggregate the updates: {error}") from None
    total = sum(n for _, n in losses)
    train_loss = sum(loss * n for loss, n in losses) / total if total else float("nan")
    return OrderedDict(zip(keys or [], averaged, strict=True)), train_loss


def _reported_shape(reply: Message) -> tuple[int, int, int] | None:
    """The shape of the images a collaborator holds, as its reply's ``info`` says."""
    info = reply.content.config_records.get("info", ConfigRecord())
    shape = tuple(int(v) for v in info.get("input-shape", []))  # type: ignore[union-attr]
    return (shape[0], shape[1], shape[2]) if len(shape) == 3 else None


def _private_mean(
    federation: _Federation,
    server_round: int,
    replies: list[tuple[int, Message]],
    previous: OrderedDict[str, NDArray[Any]] | None,
) -> list[NDArray[Any]]:
    """The noisy mean of the updates, clipped, through Flower's DP wrapper."""
    assert federation.privacy is not None
    current = previous if previous is not None else _seed_weights(federation)
    arrays = ArrayRecord.from_torch_state_dict(OrderedDict((k, torch.from_numpy(v)) for k, v in current.items()))
    try:
        noisy = federation.privacy.aggregate(server_round, arrays, [reply for _, reply in replies])
    except PrivacyError as error:
        raise FederationError(str(error)) from None
    return noisy.to_numpy_ndarrays()


def _secure_mean(
    federation: _Federation, server_round: int, replies: list[tuple[int, Message]], secure: SecureRound
) -> tuple[OrderedDict[str, NDArray[Any]], float]:
    """The SecAgg+ mean as the model's state dict (its arrays come in the model's order, without names)."""
    shapes = {shape for _, reply in replies if (shape := _reported_shape(reply)) is not None}
    if len(shapes) > 1:
        raise FederationError(f"round {server_round}: the clusters hold images of different sizes")
    if federation.input_shape is None and shapes:
        federation.input_shape = next(iter(shapes))
    if federation.input_shape is None:
        raise FederationError(f"round {server_round}: no collaborator reported the shape of its images")
    keys = list(_seed_weights(federation).keys())
    if len(keys) != len(secure.arrays):
        raise FederationError(
            f"round {server_round}: the secure mean has {len(secure.arrays)} arrays, the model {len(keys)}"
        )
    losses = [(float(m.get("train_loss", 0.0)), float(m.get("num-examples", 1))) for m in secure.metrics]
    total = sum(n for _, n in losses)
    train_loss = sum(loss * n for loss, n in losses) / total if total else float("nan")
    return OrderedDict(zip(keys, (np.asarray(a) for a in secure.arrays), strict=True)), train_loss


def _evaluate(
    federation: _Federation, server_round: int, weights: Mapping[str, NDArray[Any]], trained: _Replies
) -> tuple[dict[str, float], _Replies]:
    """Server-side evaluation on the held-out split when there is one, else federated evaluation on the
    round's participants (weighted by their examples); the metrics and the evaluate replies (none server-side)."""
    if federation.test is not None:
        return evaluate(_model(federation, weights), federation.test).metrics(), _Replies()
    content = _content(federation.settings, server_round, weights)
    replies = _exchange(federation, server_round, sorted(trained.ok), MessageType.EVALUATE, content)
    totals = {"accuracy": 0.0, "eval_loss": 0.0}
    examples = 0
    for reply in replies.ok.values():
        metrics = reply.content.metric_records.get("metrics")
        if metrics is None:
            continue
        n = int(metrics.get("num-examples", 0))  # type: ignore[arg-type]
        examples += n
        for key in totals:
            totals[key] += float(metrics.get(key, 0.0)) * n  # type: ignore[arg-type]
    return ({key: value / examples for key, value in totals.items()} if examples else {}), replies


def _model(federation: _Federation, weights: Mapping[str, NDArray[Any]]) -> torch.nn.Module:
    if federation.input_shape is None:
        raise FederationError("no client reported the input shape of its data; cannot build the model")
    model = build_model(federation.input_shape)
    model.load_state_dict(OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in weights.items()))
    return model


def _save(federation: _Federation, weights: Mapping[str, NDArray[Any]], relative: Path) -> None:
    assert federation.input_shape is not None  # known once a round was aggregated
    save_model(federation.settings.model_dir / relative, _model(federation, weights), federation.input_shape)


def _array_bytes(reply: Message) -> int:
    """The size of the model update a reply carried: the bytes of its arrays as they came over the wire."""
    clear = sum(len(array.data) for record in reply.content.array_records.values() for array in record.values())
    return clear + masked_bytes(reply)


def _spans(
    federation: _Federation, began: float, exchanges: Mapping[str, _Replies]
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """cluster -> step -> (handler began, handler ended, reply pulled), in seconds since ``began`` (Unix time);
    a reply without the ClientApp's ``started-at``/``finished-at`` has no span."""
    spans: dict[str, dict[str, tuple[float, float, float]]] = {}
    for step, replies in exchanges.items():
        for node, reply in replies.ok.items():
            metrics = reply.content.metric_records.get("metrics")
            start, end = (metrics.get(k) if metrics is not None else None for k in ("started-at", "finished-at"))
            if isinstance(start, float) and isinstance(end, float):
                received = replies.received_at.get(node, end)
                at = (round(start - began, 4), round(end - began, 4), round(received - began, 4))
                spans.setdefault(federation.name(node), {})[step] = at
    return spans


def _train_seconds(reply: Message) -> float:
    metrics = reply.content.metric_records.get("metrics")
    value = metrics.get("train-seconds", 0.0) if metrics is not None else 0.0
    return float(value) if isinstance(value, int | float) else 0.0


def _learn_name(federation: _Federation, node: int, reply: Message) -> None:
    info = reply.content.config_records.get("info")
    if info is not None and info.get("cluster-name"):
        federation.names[node] = str(info["cluster-name"])


def _error_reason(reply: Message) -> str:
    reason = reply.error.reason or f"error code {reply.error.code}"
    return reason.strip()


def _too_few_replies(federation: _Federation, server_round: int, phase: str, sampled: int, replies: _Replies) -> str:
    required = federation.settings.min_available_clients
    missing = "; ".join(_why(federation, node, reason) for node, reason in sorted(replies.missing.items()))
    return (
        f"round {server_round}: only {len(replies.ok)} of the {required} required clients replied to {phase} "
        f"within {_seconds(federation.settings.round_timeout)} s ({sampled} sampled; {missing})"
    )


def _why(federation: _Federation, node: int, reason: str) -> str:
    """Who is missing and why; a ClientApp's own error already names its cluster."""
    if node not in federation.names and reason.startswith("cluster '"):
        return reason
    return f"{federation.name(node)}: {reason}"


def _seconds(value: float) -> str:
    return f"{value:g}"


# --- what the run writes ------------------------------------------------------------------------------------


class Progress:
    """Appends events to ``progress.jsonl`` and keeps ``metrics.json`` current, in ``model_dir``."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._metrics: dict[str, Any] = {"settings": {}, "rounds": [], "final": {}}

    def started(self, settings: Settings, resume: ResumePoint | None = None) -> None:
        """``pid``: this ServerApp's process, which ``fleet run`` watches; with ``resume``, the lost run's rounds
        stay in ``metrics.json`` and the event says which round's checkpoint the run starts from."""
        self._metrics["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
        event: dict[str, Any] = {
            "event": "started",
            "rounds": settings.num_rounds,
            "min_available_clients": settings.min_available_clients,
            "round_timeout": settings.round_timeout,
            "pid": os.getpid(),
        }
        if resume is not None:
            self._metrics["rounds"] = _rounds_before(self.model_dir / METRICS_FILE, resume.first_round)
            event["resumed_from_round"] = resume.last_round
        self._event(event)

    def round(
        self,
        server_round: int,
        participants: list[str],
        metrics: Mapping[str, float],
        dropped: list[str],
        seconds: Mapping[str, float],
        received: Mapping[str, int] | None = None,
        dropped_clusters: list[str] | None = None,
        spans: Mapping[str, Mapping[str, tuple[float, float, float]]] | None = None,
    ) -> None:
        """``seconds``: where the round's time went (``round`` in all, ``train_exchange`` from push to the
        last reply, ``client_training_max`` the slowest client's own training, ``client_max`` its train plus
        evaluate handlers, ``overhead`` the round less that); ``received``: bytes of model update per
        participant; ``dropped_clusters``: the names, where known, of the nodes left out; ``spans``: each
        collaborator's handlers (metrics.json only)."""
        event: dict[str, Any] = {
            "event": "round",
            "round": server_round,
            "participants": participants,
            "metrics": _round_metrics(metrics),
            "seconds": round(seconds.get("round", 0.0), 3),
            "received_bytes": dict(sorted((received or {}).items())),
        }
        if dropped:
            event["dropped"] = dropped
        if dropped_clusters:
            event["dropped_clusters"] = dropped_clusters
        time_ = now()
        self._metrics["rounds"].append(
            {
                "round": server_round,
                "participants": participants,
                "metrics": {k: float(v) for k, v in metrics.items()},
                "dropped": dropped,
                "seconds": {k: round(v, 3) for k, v in seconds.items()},
                "spans": {
                    cluster: {step: list(at) for step, at in steps.items()} for cluster, steps in (spans or {}).items()
                },
                "time": time_,
            }
        )
        self._write_metrics()
        self._event(event, time_)

    def completed(self, metrics: Mapping[str, float], publish: Callable[[], None] | None = None) -> None:
        """``publish``: what must succeed, once every file is final, before the run counts as completed."""
        self._metrics["final"] = {k: float(v) for k, v in metrics.items()}
        self._write_metrics()
        if publish is not None:
            publish()
        self._event({"event": "completed", "metrics": {k: float(v) for k, v in metrics.items()}})

    def failed(self, reason: str) -> None:
        self._metrics["failure"] = reason
        self._write_metrics()
        self._event({"event": "failed", "reason": reason})

    def _event(self, event: dict[str, Any], time_: str | None = None) -> None:
        append_event(self.model_dir, event, time_)

    def _write_metrics(self) -> None:
        write_metrics(self.model_dir, self._metrics)


def _rounds_before(metrics_file: Path, first_round: int) -> list[Any]:
    """The rounds a lost run recorded before ``first_round``, from its ``metrics.json``."""
    try:
        recorded = json.loads(metrics_file.read_text(encoding="utf-8")).get("rounds", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in recorded if isinstance(r, dict) and isinstance(r.get("round"), int) and r["round"] < first_round]


def _round_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    # The progress line stays short: per-digit accuracies go to metrics.json and the final event.
    return {k: float(v) for k, v in metrics.items() if not k.startswith("accuracy_")}
