"""A real Prometheus scrapes a real `fleet run` (the tiny app, two collaborators over mutual TLS) on loopback,
and every PromQL query of the dashboard, and each of its variables, returns data from it; the alert rules,
loaded into the same Prometheus, stay quiet through the healthy run."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleet.cli import main
from fleet.errors import EXIT_INVALID
from fleet.federation.processes import free_port
from fleet.observability.allowlist import platform_names
from fleet.observability.dashboard import ACM_METRICS, dashboard, parse_label_values, queries, variable_queries
from fleet.observability.rules import ALERTS, rule_file_yaml
from tests.fleet.federation.federation_support import (
    TINY_APP,
    fleet_run_tiny,
    no_leftovers,
    write_data,
    write_repository,
)
from tests.fleet.observability.prometheus_support import needs_prometheus, prometheus

__all__ = ["no_leftovers"]  # a fixture

GRAFANA = {"$namespace": ".*", "$job": ".*", "$__rate_interval": "30s"}
"""What Grafana puts for the dashboard's variables: "All" of a multi-value variable is the regex ``.*``."""


def _grafana(expr: str) -> str:
    for variable, value in GRAFANA.items():
        expr = expr.replace(variable, value)
    return expr


@needs_prometheus
@pytest.mark.slow
@pytest.mark.xdist_group("federation")
def test_prometheus_scrapes_a_run_and_answers_every_dashboard_query(tmp_path: Path, no_leftovers: None) -> None:
    write_repository(tmp_path / "repo", ["alpha", "beta"], rounds=6)
    write_data(tmp_path / "data", ["alpha", "beta"])
    rules = tmp_path / "rules.yaml"
    rules.write_text(rule_file_yaml())
    port = free_port()
    with prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"], [rules]) as server:
        command = fleet_run_tiny(tmp_path, "--app", str(TINY_APP), "--metrics-port", str(port))
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
            try:
                # Look once three rounds are in and scraped: time enough for two samples in every rate window.
                deadline = time.monotonic() + 120
                while not server.query("fleet_aggregator_round >= 3"):
                    assert run.poll() is None, f"fleet run ended early: {run.communicate()[1]}"
                    assert time.monotonic() < deadline, "fleet run did not reach round 3 within 120 s"
                    time.sleep(0.2)
                # Rounds take well under a second now: five more scrapes, so that every series that appeared with
                # round 3 has two samples in its rate window.
                time.sleep(1.0)
                at = time.time()
                answers = {expr: server.query(_grafana(expr), at) for expr in queries(dashboard())}
                variables = {
                    definition: server.api(
                        f"label/{parse_label_values(definition)[1]}/values",
                        **{"match[]": _grafana(parse_label_values(definition)[0]), "start": f"{at - 60:.3f}"},
                    )
                    for definition in variable_queries(dashboard())
                }
                firing = server.query("ALERTS", at)
                groups = server.api("rules")["groups"]
            finally:
                _, stderr = run.communicate(timeout=180)
        assert run.returncode == 0, stderr
        assert f"metrics: http://127.0.0.1:{port}/metrics" in stderr

    fleet_only = {expr: found for expr, found in answers.items() if not any(m in expr for m in ACM_METRICS)}
    assert len(fleet_only) == len(answers) - 1  # the add-on health panel reads RHACM's own metric
    empty = [expr for expr, found in fleet_only.items() if not found]
    assert not empty, f"dashboard queries without data from the run: {empty}"
    assert all(found[0]["metric"].get("job", "tiny") == "tiny" for found in fleet_only.values())
    # The run's figures, as scraped: two collaborators, both up, accuracy from the tiny app's rounds.
    by_expr = {expr.split("(", 2)[-1].split("{")[0]: found for expr, found in fleet_only.items()}
    assert float(by_expr["fleet_aggregator_min_available_clients"][0]["value"][1]) == 2
    assert {s["metric"]["collaborator"] for s in by_expr["fleet_collaborator_up"]} == {"alpha", "beta"}
    assert {s["value"][1] for s in by_expr["fleet_collaborator_up"]} == {"1"}
    assert 0 < float(by_expr["fleet_aggregator_accuracy_ratio"][0]["value"][1]) <= 1
    received = next(found for expr, found in fleet_only.items() if "received_bytes" in expr)
    assert {s["metric"]["collaborator"] for s in received} == {"alpha", "beta"}
    assert all(float(s["value"][1]) > 0 for s in received)  # 64 bytes of update a round from each
    # RHACM's add-on metric is not a run's: it is allowlisted for RHACM's collector to forward.
    assert set(ACM_METRICS) <= set(platform_names())
    assert variables == {
        "label_values(fleet_job_phase, namespace)": ["fl-tiny"],
        'label_values(fleet_job_phase{namespace=~"$namespace"}, job)': ["tiny"],
    }
    # The rules loaded and evaluated; a healthy run fires none of them.
    loaded = [rule for group in groups for rule in group["rules"]]
    assert sorted(r["name"] for r in loaded) == sorted(a.name for a in ALERTS)
    assert all(r["health"] == "ok" for r in loaded), loaded
    assert firing == []


def test_a_taken_metrics_port_is_refused_before_anything_runs(tmp_path: Path) -> None:
    write_repository(tmp_path / "repo", ["alpha", "beta"])
    write_data(tmp_path / "data", ["alpha", "beta"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        arguments = ["run", "tiny", "--repo", str(tmp_path / "repo"), "--data-root", str(tmp_path / "data")]
        arguments += ["--work-dir", str(tmp_path / "runs"), "--metrics-port", str(port)]
        result = CliRunner().invoke(main, arguments)
    assert result.exit_code == EXIT_INVALID, result.output
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in result.output
    assert not (tmp_path / "runs").exists()
