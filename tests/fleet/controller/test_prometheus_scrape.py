"""The controller scraped by a real Prometheus, as on the hub.

The controller runs against the kmock hub and serves ``/metrics`` on loopback (its own `HealthServer`); the job's
progress sidecar (``python -m fleet.controller.progress``, a process of its own) serves the aggregator's metrics
from the job's ``progress.jsonl``. Prometheus scrapes both as prometheus-operator would for the rendered
ServiceMonitors (their endpoints' path and honorLabels; the aggregator's ``job`` from the SuperLink Service's
``jobLabel``, ``namespace`` from the Service's). Every query and variable of the dashboard answers (RHACM's own
add-on metric aside), each controller query from the controller; a collaborator lost shows as down, and the
alert that watches for it goes pending on the scraped series while the others stay quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fleet.controller.metrics import HealthServer
from fleet.controller.objects import aggregator_name, work_name
from fleet.federation.processes import free_port
from fleet.observability.allowlist import controller_metric_names
from fleet.observability.dashboard import ACM_METRICS, dashboard, parse_label_values, queries, variable_queries
from fleet.observability.rules import rule_file_yaml
from fleet.repository import load_repository
from tests.fleet.observability.prometheus_support import Prometheus, needs_prometheus, prometheus

from .operator_support import (
    CLUSTERS,
    JOB,
    ApiServer,
    Hub,
    Operator,
    RecordedRuns,
    eventually,
    make_ready,
    phase,
    start_job,
)
from .work_agent import collaborator_status

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=ApiServer), needs_prometheus]

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = {"$namespace": ".*", "$job": ".*", "$__rate_interval": "30s"}
"""What Grafana puts for the dashboard's variables: "All" of a multi-value variable is the regex ``.*``."""
WORKS = "work.open-cluster-management.io/v1/manifestworks"
CONTROLLER_FAMILIES = ("fleet_jobs", "fleet_job_phase", "fleet_connected_collaborators", "fleet_collaborator_up")
"""The controller's metric families the dashboard reads."""


def _grafana(expr: str) -> str:
    for variable, value in GRAFANA.items():
        expr = expr.replace(variable, value)
    return expr


def _monitors() -> dict[str, dict[str, Any]]:
    """The example's rendered ServiceMonitors, by name."""
    import render

    return {
        m.body["metadata"]["name"]: m.body
        for m in render.synth(load_repository(ROOT), "observability")
        if m.body["kind"] == "ServiceMonitor"
    }


def _scrape_config(name: str, monitor: dict[str, Any], address: str, labels: dict[str, str]) -> dict[str, Any]:
    """The scrape config prometheus-operator makes of the monitor's one endpoint, for the target at ``address``
    of a Service selected by it (``labels``: the target labels it sets from that Service)."""
    [endpoint] = monitor["spec"]["endpoints"]
    return {
        "job_name": name,
        "honor_labels": endpoint["honorLabels"],
        "metrics_path": endpoint["path"],
        "static_configs": [{"targets": [address], "labels": labels}],
    }


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _until(server: Prometheus, expr: str, what: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = await asyncio.to_thread(server.query, expr)
        if found:
            return found
        assert time.monotonic() < deadline, f"Prometheus did not see {what} ({expr}) within {timeout} s"
        await asyncio.sleep(0.2)


async def test_prometheus_scrapes_the_controller_and_the_sidecar_and_answers_the_dashboard(
    hub: Hub, tmp_path: Path
) -> None:
    monitors = _monitors()
    model_dir = hub.models / "models" / JOB.name
    model_dir.mkdir(parents=True)
    metrics_port, sidecar_port = free_port(), free_port()
    rules = tmp_path / "rules.yaml"
    rules.write_text(rule_file_yaml())
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "fleet.controller.progress", f"--directory={model_dir}", f"--port={sidecar_port}"],
        stderr=subprocess.PIPE,
    )
    with contextlib.ExitStack() as stack:
        stack.callback(sidecar.wait, 10)
        stack.callback(sidecar.terminate)
        async with Operator(hub, RecordedRuns()) as operator:
            health = HealthServer(
                operator.controller.metrics, host="127.0.0.1", metrics_port=metrics_port, health_port=free_port()
            )
            await health.start()
            try:
                await start_job(hub)
                await make_ready(hub, CLUSTERS)
                await eventually(lambda: phase(hub) == "Running", timeout=60, what="Running")
                [service] = [s for s in hub.objects("v1/services") if s["metadata"]["name"] == aggregator_name(JOB)]
                aggregators = monitors["fleet-aggregators"]
                scrape = [
                    _scrape_config(
                        "fleet-controller",
                        monitors["fleet-controller"],
                        f"127.0.0.1:{metrics_port}",
                        {"namespace": "fleet-system"},
                    ),
                    _scrape_config(
                        "fleet-aggregators",
                        aggregators,
                        f"127.0.0.1:{sidecar_port}",
                        {
                            "namespace": service["metadata"]["namespace"],
                            "job": service["metadata"]["labels"][aggregators["spec"]["jobLabel"]],
                        },
                    ),
                ]
                server = await asyncio.to_thread(
                    stack.enter_context, prometheus(tmp_path / "prometheus", [], [rules], scrape_configs=scrape)
                )
                await _run_two_rounds(hub)
                await _until(server, "fleet_job_current_round >= 2", "the controller at round 2")
                await _until(server, "fleet_aggregator_round >= 2", "the aggregator at round 2")
                # A collaborator goes: its work agent reports no available SuperNode.
                lost = CLUSTERS[2]
                work = next(
                    w
                    for w in hub.objects(WORKS)
                    if w["metadata"]["namespace"] == lost and w["metadata"]["name"] == work_name(JOB)
                )
                await hub.patch_status(WORKS, lost, work_name(JOB), collaborator_status(work, 0))
                await _until(server, f'fleet_collaborator_up{{collaborator="{lost}"}} == 0', "the collaborator down")
                await _until(server, 'ALERTS{alertname="FleetCollaboratorLost"}', "FleetCollaboratorLost pending")
                await asyncio.sleep(1.0)  # a few more scrapes: two samples of every series in its rate window
                answers, raw, variables, alerts, groups = await asyncio.to_thread(_ask, server)
            finally:
                await health.stop()
    assert sidecar.returncode is not None

    fleet_only = {expr: found for expr, found in answers.items() if not any(m in expr for m in ACM_METRICS)}
    assert len(fleet_only) == len(answers) - 1
    empty = [expr for expr, found in fleet_only.items() if not found]
    assert not empty, f"dashboard queries without data: {empty}"
    assert all(s["metric"].get("job", JOB.name) == JOB.name for found in fleet_only.values() for s in found)
    # The controller's queries read these families, and each of their series comes from the controller's target.
    controller_names = set(controller_metric_names())
    used = {n for n in controller_names for expr in fleet_only if re.search(rf"\b{n}\b", expr)}
    assert used == set(CONTROLLER_FAMILIES)
    for family in CONTROLLER_FAMILIES:
        assert {s["metric"]["instance"] for s in raw[family]} == {f"127.0.0.1:{metrics_port}"}, family
    up = {s["metric"]["collaborator"]: s["value"][1] for s in raw["fleet_collaborator_up"]}
    assert up == {CLUSTERS[0]: "1", CLUSTERS[1]: "1", lost: "0"}
    assert variables == {
        "label_values(fleet_job_phase, namespace)": [JOB.namespace],
        'label_values(fleet_job_phase{namespace=~"$namespace"}, job)': [JOB.name],
    }
    # Every rule evaluated fine over the two targets; the lost collaborator's alert is on (pending its minute, or
    # firing on a slow machine), no other.
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"]), groups
    assert {a["metric"]["alertname"] for a in alerts} == {"FleetCollaboratorLost"}
    assert {a["metric"]["alertstate"] for a in alerts} <= {"pending", "firing"}
    assert {a["metric"]["collaborator"] for a in alerts} == {lost}


async def _run_two_rounds(hub: Hub) -> None:
    """The ServerApp's progress lines, as fleet's ServerApp writes them, at the current time."""
    hub.progress({"event": "started", "rounds": 3, "min_available_clients": 2, "round_timeout": 600, "time": _now()})
    for number in (1, 2):
        hub.progress(
            {
                "event": "round",
                "round": number,
                "participants": CLUSTERS,
                "metrics": {"accuracy": 0.5 + number / 10, "train_loss": 1 / number, "eval_loss": 2 / number},
                "seconds": 1.5,
                "received_bytes": dict.fromkeys(CLUSTERS, 64),
                "time": _now(),
            }
        )

        def at_round(n: int = number) -> bool:
            return bool(hub.job()["status"].get("currentRound") == n)

        await eventually(at_round, timeout=60, what=f"round {number}")


def _ask(
    server: Prometheus,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The dashboard's queries and variables, the controller's families as stored, the alerts and the rules."""
    at = time.time()
    answers = {expr: server.query(_grafana(expr), at) for expr in queries(dashboard())}
    raw = {family: server.query(family, at) for family in CONTROLLER_FAMILIES}
    variables = {
        definition: server.api(
            f"label/{parse_label_values(definition)[1]}/values",
            **{"match[]": _grafana(parse_label_values(definition)[0]), "start": f"{at - 60:.3f}"},
        )
        for definition in variable_queries(dashboard())
    }
    return answers, raw, variables, server.query("ALERTS", at), server.api("rules")["groups"]
