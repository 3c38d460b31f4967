"""Prometheus metrics of the controller, and its health endpoints.

``/metrics`` (on the metrics port): jobs by phase, each job's phase and round, round durations, connected
collaborators per job and each collaborator's liveness as the hub sees it (1 while its collaborator is up, 0
once it was and no longer is), reconcile durations and errors, API requests. Labels are bounded: phases, the
jobs' namespaces and names, their clusters. ``/healthz`` (on the health port, liveness and readiness alike): 200 once
the controller has started (its API client works and the hub CA is loaded), 503 before.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from fleet.lifecycle import parse_time
from fleet.models import FederatedLearningStatus, Phase

if TYPE_CHECKING:
    from aiohttp import web

_ROUND_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("fleet_jobs", "FederatedLearning jobs by phase.", ["phase"], registry=self.registry)
        self.rounds = Histogram(
            "fleet_round_duration_seconds",
            "Seconds from one aggregated round to the next (from the run's start for round 1).",
            buckets=_ROUND_BUCKETS,
            registry=self.registry,
        )
        self.collaborators = Gauge(
            "fleet_connected_collaborators",
            "Collaborators available to a job (selected clusters whose collaborator is up).",
            ["namespace", "job"],
            registry=self.registry,
        )
        self.job_phase = Gauge(
            "fleet_job_phase",
            "1 for the job's current phase, 0 for its other phases.",
            ["namespace", "job", "phase"],
            registry=self.registry,
        )
        self.job_round = Gauge(
            "fleet_job_current_round", "The job's current round.", ["namespace", "job"], registry=self.registry
        )
        self.job_rounds = Gauge(
            "fleet_job_total_rounds", "The rounds the job runs.", ["namespace", "job"], registry=self.registry
        )
        self.collaborator_up = Gauge(
            "fleet_collaborator_up",
            "1 while the cluster's collaborator is up for the job, 0 once it was (or was expected) and is not.",
            ["namespace", "job", "collaborator"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "fleet_reconcile_duration_seconds",
            "Wall time of one reconcile of one job.",
            buckets=_RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "fleet_reconcile_errors_total",
            "Reconciles that ended in an error, by kind (transient errors are retried).",
            ["kind"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "fleet_api_requests_total", "Requests to the Kubernetes API.", ["method"], registry=self.registry
        )
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], Phase] = {}
        self._last_round: dict[tuple[str, str], int] = {}
        self._clusters: dict[tuple[str, str], set[str]] = {}
        for phase in Phase:
            self.jobs.labels(phase.value).set(0)

    def observe(self, namespace: str, name: str, status: FederatedLearningStatus, expected: Iterable[str] = ()) -> None:
        """Record a job's status as written; ``expected``: clusters that should have a collaborator up (those
        seen up before count too)."""
        key = (namespace, name)
        up = set(status.participating_clusters)
        with self._lock:
            self._move(key, status.phase)
            last = self._last_round.get(key, 0)
            for duration in _new_round_durations(status, last):
                self.rounds.observe(duration)
            if status.rounds:
                self._last_round[key] = max(last, status.rounds[-1].round)
            known = self._clusters.setdefault(key, set())
            known.update(up, expected)
            clusters = sorted(known)
        self.collaborators.labels(namespace, name).set(len(status.participating_clusters))
        for phase in Phase:
            self.job_phase.labels(namespace, name, phase.value).set(1 if phase is status.phase else 0)
        self.job_round.labels(namespace, name).set(status.current_round)
        self.job_rounds.labels(namespace, name).set(status.total_rounds)
        for cluster in clusters:
            self.collaborator_up.labels(namespace, name, cluster).set(1 if cluster in up else 0)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._move((namespace, name), None)
            self._last_round.pop((namespace, name), None)
            clusters = self._clusters.pop((namespace, name), set())
        with contextlib.suppress(KeyError):
            self.collaborators.remove(namespace, name)
        for phase in Phase:
            with contextlib.suppress(KeyError):
                self.job_phase.remove(namespace, name, phase.value)
        for gauge in (self.job_round, self.job_rounds):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for cluster in clusters:
            with contextlib.suppress(KeyError):
                self.collaborator_up.remove(namespace, name, cluster)

    def count_request(self, method: str) -> None:
        self.api_requests.labels(method).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def _move(self, key: tuple[str, str], phase: Phase | None) -> None:
        """Move one job between the phase gauges (``None``: it is gone); constant time per job."""
        previous = self._phases.pop(key, None)
        if previous is not None:
            self.jobs.labels(previous.value).dec()
        if phase is not None:
            self._phases[key] = phase
            self.jobs.labels(phase.value).inc()


def _new_round_durations(status: FederatedLearningStatus, seen: int) -> list[float]:
    durations = []
    previous: datetime.datetime | None = parse_time(status.started_at) if status.started_at else None
    for entry in status.rounds:
        finished = parse_time(entry.finished_at) if entry.finished_at else None
        if entry.round > seen and finished is not None and previous is not None:
            durations.append(max(0.0, (finished - previous).total_seconds()))
        previous = finished
    return durations


class HealthServer:
    """``/metrics`` and ``/healthz`` on their ports (one port may serve both)."""

    def __init__(self, metrics: Metrics, *, host: str, metrics_port: int, health_port: int) -> None:
        self.metrics = metrics
        self.ready = threading.Event()
        self._host = host
        self._ports = (metrics_port, health_port)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        # Imported here: the metric families above are read by the renderer too (`fleet.observability`), which
        # must not pay aiohttp's import (0.2 s of `fleet render`).
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for port in sorted(set(self._ports)):
            await web.TCPSite(self._runner, self._host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if self.ready.is_set():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="starting\n")
