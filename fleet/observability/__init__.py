"""Observability of federated training: the aggregator's Prometheus metrics, the alert rules, the Grafana
dashboard and the RHACM metrics allowlist, all from one list of metric names.

- `fleet.observability.aggregator`: per-round metrics of one run, made from the ServerApp's ``progress.jsonl``
  (served by the progress sidecar in the SuperLink's pod on the hub, and by ``fleet run --metrics-port``);
- `fleet.observability.local`: the ``/metrics`` endpoint of ``fleet run``: the aggregator's metrics and the
  job metrics the controller would export for the same job;
- `fleet.observability.rules`: the alerting rules (a Prometheus rule file; ``promtool`` checks and tests it);
- `fleet.observability.dashboard`: the Grafana dashboard;
- `fleet.observability.allowlist`: which metrics RHACM's collectors forward to the hub's Thanos.

The controller's own metrics are in `fleet.controller.metrics`.
"""
