"""The aggregator's Prometheus metrics: per-round figures of one federated run, from its progress events.

The ServerApp records every round in ``progress.jsonl`` (`fleet.app.server_app`); `AggregatorMetrics` turns
those events into metric families at scrape time. On the hub the progress sidecar in the SuperLink's pod serves
them (`fleet.controller.progress`): the scrape target's own labels say which job (``namespace`` from the pod,
``job`` from the ``fleet.dev/job`` label); ``fleet run --metrics-port`` gives ``namespace`` and ``job`` itself.

Names follow Prometheus' conventions: the unit in the name (``_seconds``, ``_bytes``, ``_ratio``), ``_total`` on
counters, ``_timestamp_seconds`` for Unix times; label values are bounded: a job's clusters, never node ids.
The per-cluster label is ``collaborator``, not ``cluster``: RHACM's metrics collector labels every series it
forwards with ``cluster`` (the managed cluster it came from, here the hub) and its alerts with
``managed_cluster``.
A value that is not known yet (the accuracy before the first round) is absent, never a made-up 0.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet.federation.progress import Completed, Event, Failed, RoundFinished, Started
from fleet.lifecycle import parse_time

Kind = Literal["gauge", "counter", "histogram"]

ROUND_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Seconds: from the tests' sub-second rounds to an hour-long round of a large model."""


@dataclass(frozen=True)
class MetricInfo:
    name: str
    """The family's name as exposed (a counter's with its ``_total``)."""
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    """Labels of its own, after the job's ``namespace`` and ``job``."""

    def sample_names(self) -> tuple[str, ...]:
        """The series names Prometheus stores for this family."""
        if self.kind == "histogram":
            return tuple(f"{self.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


TRAINING = MetricInfo("fleet_aggregator_training", "gauge", "1 while the run trains, 0 once it completed or failed.")
PLANNED_ROUNDS = MetricInfo("fleet_aggregator_planned_rounds", "gauge", "Rounds the run is to aggregate.")
ROUND = MetricInfo("fleet_aggregator_round", "gauge", "The last round aggregated (0 before the first).")
MIN_CLIENTS = MetricInfo(
    "fleet_aggregator_min_available_clients", "gauge", "Collaborators a round needs (minAvailableClients)."
)
ROUND_TIMEOUT = MetricInfo(
    "fleet_aggregator_round_timeout_seconds", "gauge", "Longest wait for each step of a round (roundTimeoutSeconds)."
)
ACCURACY = MetricInfo(
    "fleet_aggregator_accuracy_ratio", "gauge", "Accuracy of the global model after the last round, 0 to 1."
)
TRAIN_LOSS = MetricInfo(
    "fleet_aggregator_train_loss", "gauge", "Training loss of the last round, averaged over the participants' examples."
)
EVAL_LOSS = MetricInfo(
    "fleet_aggregator_eval_loss", "gauge", "Evaluation loss of the global model after the last round."
)
PARTICIPANTS = MetricInfo(
    "fleet_aggregator_round_participants", "gauge", "Collaborators whose update the last round aggregated."
)
PARTICIPATIONS = MetricInfo(
    "fleet_aggregator_participations_total",
    "counter",
    "Rounds that aggregated the cluster's update.",
    ("collaborator",),
)
DROPPED = MetricInfo(
    "fleet_aggregator_dropped_updates_total",
    "counter",
    "Rounds the cluster was sampled for and left out of (no reply in time, an error, disconnected).",
    ("collaborator",),
)
LAST_SEEN = MetricInfo(
    "fleet_aggregator_collaborator_last_seen_timestamp_seconds",
    "gauge",
    "Unix time of the last round that aggregated the cluster's update.",
    ("collaborator",),
)
RECEIVED = MetricInfo(
    "fleet_aggregator_received_bytes_total",
    "counter",
    "Bytes of model updates (the arrays of its training replies) received from the cluster.",
    ("collaborator",),
)
ROUND_DURATION = MetricInfo(
    "fleet_aggregator_round_duration_seconds", "histogram", "Duration of each round as the ServerApp measured it."
)
LAST_PROGRESS = MetricInfo(
    "fleet_aggregator_last_progress_timestamp_seconds",
    "gauge",
    "Unix time of the run's start or of its last aggregated round, whichever is later.",
)

METRICS: tuple[MetricInfo, ...] = (
    TRAINING,
    PLANNED_ROUNDS,
    ROUND,
    MIN_CLIENTS,
    ROUND_TIMEOUT,
    ACCURACY,
    TRAIN_LOSS,
    EVAL_LOSS,
    PARTICIPANTS,
    PARTICIPATIONS,
    DROPPED,
    LAST_SEEN,
    RECEIVED,
    ROUND_DURATION,
    LAST_PROGRESS,
)

_ROUND_METRICS = {"accuracy": ACCURACY, "train_loss": TRAIN_LOSS, "eval_loss": EVAL_LOSS}
"""The ServerApp's metric keys that become gauges (per-digit accuracies stay in metrics.json)."""


@dataclass
class _State:
    values: dict[str, float] = field(default_factory=dict)
    """Unlabelled gauges by name, once known."""
    per_cluster: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per-cluster families by name: cluster -> value."""
    durations: list[float] = field(default_factory=list)


class AggregatorMetrics(Collector):
    """The metrics of one run, updated with `apply`; register it in a ``CollectorRegistry``."""

    def __init__(self, *, namespace: str | None = None, job: str | None = None) -> None:
        if (namespace is None) != (job is None):
            raise ValueError("give both namespace and job, or neither (the scrape target then labels them)")
        self._base: dict[str, str] = {} if job is None or namespace is None else {"namespace": namespace, "job": job}
        self._state = _State()
        self._lock = threading.Lock()

    def apply(self, events: Iterable[Event]) -> None:
        with self._lock:
            for event in events:
                self._apply(event)

    def _apply(self, event: Event) -> None:
        values = self._state.values
        if isinstance(event, Started):
            # A new run: nothing of an earlier one carries over (a restarted SuperLink re-reads its file whole).
            self._state = _State()
            values = self._state.values
            values[TRAINING.name] = 1
            values[PLANNED_ROUNDS.name] = event.rounds
            values[ROUND.name] = 0
            if event.min_available_clients is not None:
                values[MIN_CLIENTS.name] = event.min_available_clients
            if event.round_timeout is not None:
                values[ROUND_TIMEOUT.name] = event.round_timeout
            if event.time:
                values[LAST_PROGRESS.name] = parse_time(event.time).timestamp()
        elif isinstance(event, RoundFinished):
            values[ROUND.name] = max(values.get(ROUND.name, 0), event.round)
            values[PARTICIPANTS.name] = len(event.participants)
            for key, info in _ROUND_METRICS.items():
                if key in event.metrics:
                    values[info.name] = event.metrics[key]
            when = parse_time(event.time).timestamp() if event.time else None
            if when is not None:
                values[LAST_PROGRESS.name] = max(values.get(LAST_PROGRESS.name, when), when)
            for cluster in event.participants:
                self._add(PARTICIPATIONS, cluster, 1)
                if when is not None:
                    self._cluster(LAST_SEEN)[cluster] = when
            for cluster in event.dropped:
                self._add(DROPPED, cluster, 1)
            for cluster, received in event.received_bytes.items():
                self._add(RECEIVED, cluster, received)
            if event.seconds is not None:
                self._state.durations.append(event.seconds)
        elif isinstance(event, Completed | Failed):
            values[TRAINING.name] = 0
            if isinstance(event, Completed):
                for key, info in _ROUND_METRICS.items():
                    if key in event.metrics:
                        values[info.name] = event.metrics[key]

    def _cluster(self, info: MetricInfo) -> dict[str, float]:
        return self._state.per_cluster.setdefault(info.name, {})

    def _add(self, info: MetricInfo, cluster: str, amount: float) -> None:
        series = self._cluster(info)
        series[cluster] = series.get(cluster, 0) + amount

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            state = _State(
                dict(self._state.values),
                {k: dict(v) for k, v in self._state.per_cluster.items()},
                list(self._state.durations),
            )
        base_names, base_values = list(self._base), list(self._base.values())
        for info in METRICS:
            labels = [*base_names, *info.labels]
            if info.kind == "histogram":
                if not state.durations and TRAINING.name not in state.values:
                    continue  # no run yet
                histogram = HistogramMetricFamily(info.name, info.help, labels=labels)
                durations = state.durations
                buckets = [(_le(bound), float(sum(1 for d in durations if d <= bound))) for bound in ROUND_BUCKETS]
                buckets.append(("+Inf", float(len(durations))))
                histogram.add_metric(base_values, buckets, sum(durations))
                yield histogram
            elif info.labels:
                series = state.per_cluster.get(info.name, {})
                if not series:
                    continue
                family: CounterMetricFamily | GaugeMetricFamily = (
                    CounterMetricFamily(info.name, info.help, labels=labels)
                    if info.kind == "counter"
                    else GaugeMetricFamily(info.name, info.help, labels=labels)
                )
                for cluster, value in sorted(series.items()):
                    family.add_metric([*base_values, cluster], value)
                yield family
            elif info.name in state.values:
                gauge = GaugeMetricFamily(info.name, info.help, labels=labels)
                gauge.add_metric(base_values, state.values[info.name])
                yield gauge

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families come and go with the run; nothing to check at registration


def _le(bound: float) -> str:
    return str(float(bound))
