"""The alert rules, checked by the real thing: ``promtool check rules`` and ``promtool test rules``, with a case
that fires and a case that does not for every alert (synthetic series, one sample a minute)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.observability.rules import ALERTS, rule_file_yaml
from tests.fleet.observability.prometheus_support import PROMTOOL, needs_promtool

pytestmark = needs_promtool

JOB = {"namespace": "fl-a", "job": "a"}


def _series(metric: str, values: str, **labels: str) -> dict[str, str]:
    every = {**JOB, **labels}
    inner = ", ".join(f'{k}="{v}"' for k, v in every.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def _phase(phase: str, values: str) -> dict[str, str]:
    return _series("fleet_job_phase", values, phase=phase, instance="controller")


PER_CLUSTER = {"FleetCollaboratorAddOnUnavailable"}
"""Alerts about a managed cluster rather than a job: no namespace or job label of the job's."""


def _addon(values: str, status: str, cluster: str = "eu-west-a") -> dict[str, str]:
    """RHACM's add-on condition series: one per status of the condition, 1 on the one that holds."""
    labels = {"addon_name": "fleet-collaborator", "condition": "Available", "status": status}
    inner = ", ".join(f'{k}="{v}"' for k, v in {**labels, "managed_cluster_name": cluster}.items())
    return {"series": f"acm_managed_cluster_addon_status_condition{{{inner}}}", "values": values}


def _expected(name: str, **labels: str) -> dict[str, Any]:
    """The alert as it fires: its labels and its annotations with the labels filled in."""
    alert = next(a for a in ALERTS if a.name == name)
    every = labels if name in PER_CLUSTER else {**JOB, **labels}

    def fill(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: every[m[1]], text)

    return {
        "exp_labels": {**every, "severity": alert.severity},
        "exp_annotations": {"summary": fill(alert.summary), "description": fill(alert.description)},
    }


# alert -> (series where it fires, series where it does not, when to look, the labels it fires with)
CASES: dict[str, tuple[list[dict[str, str]], list[dict[str, str]], str, dict[str, str]]] = {
    "FleetJobFailed": (
        [_phase("Failed", "0 1 1 1"), _phase("Running", "1 0 0 0")],
        [_phase("Failed", "0 0 0 0"), _phase("Running", "1 1 1 1")],
        "2m",
        {},
    ),
    "FleetRoundStalled": (
        # The last progress stays at t=0 while the timeout is 60 s and the run still trains.
        [
            _series("fleet_aggregator_last_progress_timestamp_seconds", "0 0 0 0 0", instance="aggregator"),
            _series("fleet_aggregator_round_timeout_seconds", "60x4", instance="aggregator"),
            _series("fleet_aggregator_training", "1x4", instance="aggregator"),
        ],
        # A round every minute: the last progress keeps up with the clock.
        [
            _series("fleet_aggregator_last_progress_timestamp_seconds", "0 60 120 180 240", instance="aggregator"),
            _series("fleet_aggregator_round_timeout_seconds", "60x4", instance="aggregator"),
            _series("fleet_aggregator_training", "1x4", instance="aggregator"),
        ],
        "4m",
        {},
    ),
    "FleetCollaboratorLost": (
        [
            _series("fleet_collaborator_up", "1 1 0 0 0 0", collaborator="beta", instance="controller"),
            _series("fleet_collaborator_up", "1x5", collaborator="alpha", instance="controller"),
            _phase("Running", "1x5"),
        ],
        # The same collaborators removed because the job completed: nothing is lost.
        [
            _series("fleet_collaborator_up", "1 1 0 0 0 0", collaborator="beta", instance="controller"),
            _phase("Running", "1 1 0 0 0 0"),
            _phase("Completed", "0 0 1 1 1 1"),
        ],
        "4m",
        {"collaborator": "beta"},
    ),
    "FleetTooFewCollaborators": (
        [
            _series("fleet_connected_collaborators", "1x4", instance="controller"),
            _series("fleet_aggregator_min_available_clients", "2x4", instance="aggregator"),
            _phase("Running", "1x4"),
        ],
        [
            _series("fleet_connected_collaborators", "2x4", instance="controller"),
            _series("fleet_aggregator_min_available_clients", "2x4", instance="aggregator"),
            _phase("Running", "1x4"),
        ],
        "3m",
        {},
    ),
    "FleetCollaboratorAddOnUnavailable": (
        # Available, then False (the agent not ready) for longer than the alert waits.
        [_addon("1 1 0 0 0 0 0 0 0", "true"), _addon("0 0 1 1 1 1 1 1 1", "false")],
        # Unavailable for two minutes only (a restarting agent), then available again.
        [_addon("1 1 0 0 1 1 1 1 1", "true"), _addon("0 0 1 1 0 0 0 0 0", "false")],
        "8m",
        {"managed_cluster_name": "eu-west-a"},
    ),
}


def _tests(swap: str | None = None) -> list[dict[str, Any]]:
    """One test group per alert and case; ``swap``: expect the opposite for that alert (promtool must fail)."""
    groups = []
    for name, (firing, quiet, when, labels) in CASES.items():
        for fires, series in ((True, firing), (False, quiet)):
            expect = fires != (name == swap)
            groups.append(
                {
                    "name": f"{name} {'fires' if fires else 'does not fire'}",
                    "interval": "1m",
                    "input_series": series,
                    "alert_rule_test": [
                        {
                            "eval_time": when,
                            "alertname": name,
                            "exp_alerts": [_expected(name, **labels)] if expect else [],
                        }
                    ],
                }
            )
    return groups


def _promtool(
    tmp_path: Path, *args: str, tests: list[dict[str, Any]] | None = None
) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    (tmp_path / "rules.yaml").write_text(rule_file_yaml())
    if tests is not None:
        unit = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
        (tmp_path / "tests.yaml").write_text(yaml.safe_dump(unit, sort_keys=False, width=10_000))
    return subprocess.run([PROMTOOL, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    assert (
        set(CASES)
        == {a.name for a in ALERTS}
        == {
            "FleetJobFailed",
            "FleetRoundStalled",
            "FleetCollaboratorLost",
            "FleetTooFewCollaborators",
            "FleetCollaboratorAddOnUnavailable",
        }
    )


def test_promtool_checks_the_rule_file(tmp_path: Path) -> None:
    result = _promtool(tmp_path, "check", "rules", "rules.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_tests_every_alert_firing_and_not(tmp_path: Path) -> None:
    result = _promtool(tmp_path, "test", "rules", "tests.yaml", tests=_tests())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("alert", sorted(CASES))
def test_promtool_fails_on_the_opposite_expectation(tmp_path: Path, alert: str) -> None:
    # The cases decide: expecting the opposite of either case of an alert makes promtool fail.
    result = _promtool(tmp_path, "test", "rules", "tests.yaml", tests=_tests(swap=alert))
    assert result.returncode == 1, result.stdout + result.stderr
    assert alert in result.stdout + result.stderr
