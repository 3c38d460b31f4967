"""``fleet run --metrics-port``: the metrics of a run on this machine, served while it runs.

The same names as on the hub, so that the dashboard's queries and the alert rules work on either: the
aggregator's per-round metrics (`fleet.observability.aggregator`, fed with the run's progress events) and the
job metrics the controller exports for a job on the hub (`fleet.controller.metrics`: phase, round, connected
collaborators, each collaborator's liveness), here read from the run's ``status.json`` at every scrape.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from fleet.controller.metrics import Metrics
from fleet.federation.progress import Event
from fleet.federation.status import InvalidStatusError, read_status
from fleet.observability.aggregator import AggregatorMetrics

JOB_FAMILIES = (
    "fleet_jobs",
    "fleet_job_phase",
    "fleet_job_current_round",
    "fleet_job_total_rounds",
    "fleet_connected_collaborators",
    "fleet_collaborator_up",
    "fleet_round_duration_seconds_bucket",
    "fleet_round_duration_seconds_sum",
    "fleet_round_duration_seconds_count",
)
"""The controller's per-job series; its reconcile and API-request series mean nothing for a local run."""


class RunMetrics:
    """The metrics of one local run of ``job``: `apply` its progress events; each scrape reads ``status_file``."""

    def __init__(self, namespace: str, job: str, status_file: Path, clusters: Iterable[str]) -> None:
        self.namespace, self.job = namespace, job
        self.status_file = status_file
        self.clusters = tuple(clusters)
        self.aggregator = AggregatorMetrics(namespace=namespace, job=job)
        self._registry = CollectorRegistry()
        self._registry.register(self.aggregator)
        self._job = Metrics()
        self._job_series = self._job.registry.restricted_registry(JOB_FAMILIES)
        self._lock = threading.Lock()

    def apply(self, events: Iterable[Event]) -> None:
        self.aggregator.apply(events)

    def exposition(self) -> bytes:
        with self._lock:
            try:
                status = read_status(self.status_file)
            except (OSError, InvalidStatusError):
                pass  # not written yet, or between two writes: the last status read stands
            else:
                self._job.observe(self.namespace, self.job, status, self.clusters)
            # Two registries, no family in both: their expositions concatenate into one valid exposition.
            return bytes(generate_latest(self._registry)) + bytes(generate_latest(self._job_series))


def serve(exposition: Callable[[], bytes], host: str, port: int) -> ThreadingHTTPServer:
    """A ``/metrics`` server on ``host:port`` in a daemon thread; raises OSError when the port is taken."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urllib.parse.urlsplit(self.path).path != "/metrics":
                self._answer(404, b"not found\n", "text/plain")
                return
            self._answer(200, exposition(), CONTENT_TYPE_LATEST)

        def _answer(self, code: int, data: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # a line per scrape would drown the progress bar

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fleet-metrics", daemon=True).start()
    return server
