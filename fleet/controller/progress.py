"""Following a job's run: the ServerApp's ``progress.jsonl``, read where the controller can reach it.

In the cluster the file lies on the job's model storage, mounted in the SuperLink's pod only; a small
sidecar in that pod (``python -m fleet.controller.progress``, `serve`) answers ``GET /progress?offset=N``
with the file's bytes from ``N``, and `HttpProgress` reads only what was appended since its last read. The
same sidecar serves the aggregator's Prometheus metrics on ``GET /metrics``
(`fleet.observability.aggregator`), made from the same file.
`FileProgress` reads the file directly when the controller runs where the storage is mapped locally. Both
parse lines with `fleet.federation.progress.parse_event`, the reader ``fleet run`` uses.
"""

from __future__ import annotations

import argparse
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from fleet.federation.progress import PROGRESS_FILE, Event, ProgressFollower, parse_event
from fleet.observability.aggregator import AggregatorMetrics

from .objects import JobRef

_TIMEOUT_SECONDS = 5.0


class ProgressUnavailableError(Exception):
    """The progress could not be read now (the sidecar is not up yet, a network error): try again later."""


class ProgressSource(Protocol):
    def read(self, job: JobRef, model_dir: str) -> list[Event]:
        """Events appended since the last read of ``job`` (all of them on the first read)."""
        ...

    def forget(self, job: JobRef) -> None:
        """Drop what is kept about ``job`` (it was deleted)."""
        ...


@dataclass
class FileProgress:
    """``progress.jsonl`` under ``root`` + the job's model directory (the storage mapped on this machine)."""

    root: Path
    _followers: dict[JobRef, ProgressFollower] = field(default_factory=dict)

    def read(self, job: JobRef, model_dir: str) -> list[Event]:
        follower = self._followers.get(job)
        if follower is None:
            follower = self._followers[job] = ProgressFollower(self.root / model_dir.lstrip("/") / PROGRESS_FILE)
        return follower.read()

    def forget(self, job: JobRef) -> None:
        self._followers.pop(job, None)


@dataclass
class HttpProgress:
    """The progress sidecar of each job's SuperLink, by URL (`objects.progress_url`)."""

    url_of: Callable[[JobRef], str]
    _offsets: dict[JobRef, int] = field(default_factory=dict)
    _pending: dict[JobRef, bytes] = field(default_factory=dict)

    def read(self, job: JobRef, model_dir: str) -> list[Event]:
        offset = self._offsets.get(job, 0)
        url = f"{self.url_of(job)}?{urllib.parse.urlencode({'offset': offset})}"
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as answer:
                chunk: bytes = answer.read()
        except (urllib.error.URLError, OSError) as error:
            raise ProgressUnavailableError(f"{url}: {error}") from error
        self._offsets[job] = offset + len(chunk)
        *lines, rest = (self._pending.get(job, b"") + chunk).split(b"\n")
        self._pending[job] = rest
        return [
            parse_event(line.decode("utf-8", errors="replace"), f"{url} (line from offset {offset})")
            for line in lines
            if line.strip()
        ]

    def forget(self, job: JobRef) -> None:
        self._offsets.pop(job, None)
        self._pending.pop(job, None)


# --- the sidecar --------------------------------------------------------------------------------------------


def serve(directory: Path, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """A server answering ``/progress?offset=N`` (the file from byte N; empty while it does not exist),
    ``/metrics`` (the aggregator's metrics) and ``/healthz``. Call ``serve_forever`` on it."""
    progress = directory / PROGRESS_FILE
    follower = ProgressFollower(progress)
    metrics = AggregatorMetrics()  # the scrape target labels namespace and job
    registry = CollectorRegistry()
    registry.register(metrics)
    lock = threading.Lock()

    def exposition() -> bytes:
        with lock:  # one reader of the file at a time: the follower keeps an offset
            metrics.apply(follower.read())
        return bytes(generate_latest(registry))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/healthz":
                self._answer(200, b"ok\n")
                return
            if url.path == "/metrics":
                self._answer(200, exposition(), CONTENT_TYPE_LATEST)
                return
            if url.path != "/progress":
                self._answer(404, b"not found\n")
                return
            try:
                offset = int(urllib.parse.parse_qs(url.query).get("offset", ["0"])[0])
            except ValueError:
                self._answer(400, b"expected an integer offset\n")
                return
            try:
                with progress.open("rb") as source:
                    source.seek(max(0, offset))
                    data = source.read()
            except FileNotFoundError:
                data = b""
            self._answer(200, data)

        def _answer(self, code: int, data: bytes, content_type: str = "application/x-ndjson") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # one line per poll would drown the pod's log

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a job's progress.jsonl to the controller.")
    parser.add_argument("--directory", type=Path, required=True, help="the job's model directory")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = serve(args.directory, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
