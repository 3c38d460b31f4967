"""The alerting rules: a Prometheus rule file over the aggregator's and the controller's metrics, and RHACM's
metric of the collaborator add-on's health.

RHACM evaluates custom rules in the hub's Thanos Ruler, over the metrics of every cluster, from the
``custom_rules.yaml`` key of the ``thanos-ruler-custom-rules`` ConfigMap in
``open-cluster-management-observability`` (rendered into ``manifests/observability/``); the same file works
as any Prometheus' ``rule_files``. ``promtool check rules`` and ``promtool test rules`` check it in the tests.

Every job's expression aggregates ``by (namespace, job)`` first: on the hub the two sides of a comparison come
from two scrape targets (the controller, and the job's aggregator sidecar) whose other labels differ. The add-on's
is per managed cluster (``managed_cluster_name``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from fleet.observability.dashboard import ADDON_AVAILABLE

GROUP = "fleet-federated-learning"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def rule(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0m":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {"summary": self.summary, "description": self.description}
        return rule


def _running(phase: str = "Running") -> str:
    return f'max by (namespace, job) (fleet_job_phase{{phase="{phase}"}}) == 1'


ALERTS: tuple[Alert, ...] = (
    Alert(
        "FleetJobFailed",
        _running("Failed"),
        "0m",
        "critical",
        "Federated-learning job {{ $labels.namespace }}/{{ $labels.job }} failed",
        "The controller set the job's phase to Failed; its FederatedLearning status.message (or `fleet status "
        "--hub`) says why. A failed job stays failed until it is deleted and applied again.",
    ),
    Alert(
        "FleetRoundStalled",
        "(time() - max by (namespace, job) (fleet_aggregator_last_progress_timestamp_seconds))"
        " > on (namespace, job) max by (namespace, job) (fleet_aggregator_round_timeout_seconds)"
        " and on (namespace, job) max by (namespace, job) (fleet_aggregator_training) == 1",
        "1m",
        "warning",
        "Job {{ $labels.namespace }}/{{ $labels.job }}: no round aggregated within its round timeout",
        "The aggregator has trained without finishing a round for longer than roundTimeoutSeconds: "
        "collaborators are not replying, or the ServerApp is stuck.",
    ),
    Alert(
        "FleetCollaboratorLost",
        "max by (namespace, job, collaborator) (fleet_collaborator_up) == 0 and on (namespace, job) " + _running(),
        "1m",
        "warning",
        "Job {{ $labels.namespace }}/{{ $labels.job }} lost collaborator {{ $labels.collaborator }}",
        "The collaborator on {{ $labels.collaborator }} was up for this running job and is not any more (its "
        "ManifestWork reports no available SuperNode): the rounds go on without it while minAvailableClients "
        "are left.",
    ),
    Alert(
        "FleetTooFewCollaborators",
        "max by (namespace, job) (fleet_connected_collaborators)"
        " < on (namespace, job) max by (namespace, job) (fleet_aggregator_min_available_clients)"
        " and on (namespace, job) " + _running(),
        "1m",
        "critical",
        "Job {{ $labels.namespace }}/{{ $labels.job }} has fewer collaborators than minAvailableClients",
        "Fewer collaborators are up than the job's minAvailableClients: no round can finish, and the job "
        "fails once a round times out.",
    ),
    Alert(
        "FleetCollaboratorAddOnUnavailable",
        f"{ADDON_AVAILABLE} == 0",
        "5m",
        "warning",
        "The fleet-collaborator add-on on {{ $labels.managed_cluster_name }} is not available",
        "OCM reports the cluster's fleet-collaborator ManagedClusterAddOn not Available: its agent is not ready "
        "because the cluster's hub-signed registration certificate is missing, expired, not its key's or not "
        "this cluster's (the agent's log says which). No job's collaborator on that cluster can sign in.",
    ),
)


def rule_file() -> dict[str, Any]:
    return {"groups": [{"name": GROUP, "rules": [alert.rule() for alert in ALERTS]}]}


def rule_file_yaml() -> str:
    """The rule file as YAML: byte-identical on every run (insertion order, no wrapping)."""
    return yaml.safe_dump(rule_file(), sort_keys=False, width=10_000, allow_unicode=True)
