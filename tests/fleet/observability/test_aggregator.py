"""The aggregator's metrics from progress events, as the progress sidecar serves them, and the dashboard's
model against the fields Grafana requires."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fleet.controller.progress import serve
from fleet.federation.progress import Completed, RoundFinished, Started
from fleet.observability.aggregator import METRICS, AggregatorMetrics
from fleet.observability.allowlist import user_workload_names
from fleet.observability.dashboard import dashboard, queries

START = "2026-01-01T00:00:00Z"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _exposition(metrics: AggregatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(metrics)
    return _samples(generate_latest(registry).decode())


def test_rounds_become_metrics_and_unknown_values_stay_absent() -> None:
    metrics = AggregatorMetrics(namespace="fl-a", job="a")
    assert _exposition(metrics) == {}  # no run yet: nothing, not zeros
    metrics.apply([Started(3, 2, 60.0, START)])
    job = (("job", "a"), ("namespace", "fl-a"))
    before = _exposition(metrics)
    assert before[("fleet_aggregator_training", job)] == 1
    assert before[("fleet_aggregator_round", job)] == 0
    assert ("fleet_aggregator_accuracy_ratio", job) not in before  # not known before round 1
    metrics.apply(
        [
            RoundFinished(
                1,
                ("alpha", "beta"),
                {"accuracy": 0.5, "train_loss": 1.5},
                "2026-01-01T00:00:10Z",
                7.0,
                {"alpha": 100, "beta": 100},
            ),
            RoundFinished(
                2,
                ("alpha",),
                {"accuracy": 0.75, "train_loss": 1.0},
                "2026-01-01T00:00:40Z",
                30.0,
                {"alpha": 100},
                ("beta",),
            ),
        ]
    )
    after = _exposition(metrics)
    assert after[("fleet_aggregator_round", job)] == 2
    assert after[("fleet_aggregator_accuracy_ratio", job)] == 0.75
    assert after[("fleet_aggregator_train_loss", job)] == 1.0
    assert after[("fleet_aggregator_round_participants", job)] == 1
    assert after[("fleet_aggregator_min_available_clients", job)] == 2
    assert after[("fleet_aggregator_round_timeout_seconds", job)] == 60
    assert after[("fleet_aggregator_last_progress_timestamp_seconds", job)] == 1767225640.0
    alpha, beta = (*job, ("collaborator", "alpha")), (*job, ("collaborator", "beta"))
    assert after[("fleet_aggregator_participations_total", tuple(sorted(alpha)))] == 2
    assert after[("fleet_aggregator_participations_total", tuple(sorted(beta)))] == 1
    assert after[("fleet_aggregator_dropped_updates_total", tuple(sorted(beta)))] == 1
    assert after[("fleet_aggregator_received_bytes_total", tuple(sorted(alpha)))] == 200
    assert after[("fleet_aggregator_collaborator_last_seen_timestamp_seconds", tuple(sorted(beta)))] == 1767225610.0
    assert after[("fleet_aggregator_round_duration_seconds_count", job)] == 2
    assert after[("fleet_aggregator_round_duration_seconds_sum", job)] == 37
    assert after[("fleet_aggregator_round_duration_seconds_bucket", tuple(sorted((*job, ("le", "10.0")))))] == 1
    metrics.apply([Completed({"accuracy": 0.8})])
    done = _exposition(metrics)
    assert done[("fleet_aggregator_training", job)] == 0
    assert done[("fleet_aggregator_accuracy_ratio", job)] == 0.8
    # A new run starts from nothing.
    metrics.apply([Started(1, 1, 5.0, START)])
    assert ("fleet_aggregator_participations_total", tuple(sorted(alpha))) not in _exposition(metrics)


def test_every_family_is_named_by_convention_and_allowlisted() -> None:
    for info in METRICS:
        assert info.name.startswith("fleet_aggregator_")
        assert info.name.endswith("_total") == (info.kind == "counter")
        assert not any(label in ("cluster", "node", "instance") for label in info.labels)
        assert set(info.sample_names()) <= set(user_workload_names())


def test_the_sidecar_serves_the_aggregators_metrics_from_the_progress_file(tmp_path: Path) -> None:
    (tmp_path / "progress.jsonl").write_text(
        '{"event": "started", "rounds": 2, "min_available_clients": 2, "round_timeout": 30, "time": "' + START + '"}\n'
        '{"event": "round", "round": 1, "participants": ["alpha", "beta"], "metrics": {"accuracy": 0.6}, '
        '"seconds": 2.5, "received_bytes": {"alpha": 64, "beta": 64}, "time": "2026-01-01T00:00:03Z"}\n'
    )
    server = serve(tmp_path, 0, host="127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain")
            first = _samples(answer.read().decode())
        with (tmp_path / "progress.jsonl").open("a") as out:
            out.write('{"event": "completed", "metrics": {"accuracy": 0.7}}\n')
        with urllib.request.urlopen(url, timeout=5) as answer:
            second = _samples(answer.read().decode())
    finally:
        server.shutdown()
        server.server_close()
    # No namespace or job label of its own: the scrape target's (the pod's namespace, its fleet.dev/job) apply.
    assert first[("fleet_aggregator_accuracy_ratio", ())] == 0.6
    assert first[("fleet_aggregator_received_bytes_total", (("collaborator", "beta"),))] == 64
    assert first[("fleet_aggregator_training", ())] == 1
    assert second[("fleet_aggregator_training", ())] == 0
    assert second[("fleet_aggregator_accuracy_ratio", ())] == 0.7


def test_the_dashboard_has_what_grafana_requires() -> None:
    model = dashboard()
    for field in ("uid", "title", "schemaVersion", "panels", "templating", "time"):
        assert field in model, field
    assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 36
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in model["panels"]:
        assert panel["type"] in {"timeseries", "stat", "bargauge", "state-timeline", "table"}
        assert panel["title"] and panel["targets"]
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        covered = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(target["expr"] for target in panel["targets"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    names = {variable["name"] for variable in model["templating"]["list"]}
    assert names == {"datasource", "namespace", "job"}
    assert len(queries(model)) == sum(len(panel["targets"]) for panel in model["panels"])
