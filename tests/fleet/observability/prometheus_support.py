"""The real Prometheus of the tests: Debian's ``prometheus`` package (``prometheus`` and ``promtool``), which
.ci/run installs. Tests that need it are skipped, saying so, where it is absent."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.federation.processes import free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian's prometheus package; .ci/run installs it)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (Debian's prometheus package; .ci/run installs it)"
)


@dataclass
class Prometheus:
    """A Prometheus server on loopback; `query` asks its HTTP API."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector (at Unix time ``at``, else now)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result


@contextlib.contextmanager
def prometheus(
    folder: Path,
    targets: list[str],
    rule_files: list[Path],
    interval: str = "200ms",
    *,
    scrape_configs: list[dict[str, Any]] | None = None,
) -> Iterator[Prometheus]:
    """Start ``prometheus`` scraping ``targets`` (host:port) every ``interval`` with ``rule_files``; stop it after.
    ``scrape_configs``: Prometheus' own scrape configs instead (``targets`` is then ignored)."""
    assert PROMETHEUS is not None
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": scrape_configs
        or [
            {
                # As the hub's ServiceMonitors do: the exporters' own namespace and job labels win.
                "job_name": "fleet",
                "honor_labels": True,
                "static_configs": [{"targets": targets}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as answer:
                if answer.status == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start; its log:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
