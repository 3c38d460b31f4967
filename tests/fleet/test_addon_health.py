"""The collaborator add-on's health as OCM reports it: the ManagedClusterAddOn's Available condition, from the
template add-on's workload prober over the agent Deployment, which is ready exactly while the agent says its
cluster's registration is usable.

OCM's rules, stated here apart from the code they check (addon-framework): a template add-on's health prober is
``WorkloadAvailability`` (ocm ``pkg/addon/templateagent/template_agent.go``), which probes each Deployment of
the template that does not ask for 0 replicas, through the work agent's WellKnownStatus feedback
(``pkg/addonmanager/controllers/agentdeploy/healthcheck_sync.go``: ``analyzeWorkloadsWorkProber``); no feedback
yet makes Available Unknown (``NoProbeResult``), and a Deployment is available when it asks for 0 replicas or has
at least one ready (``pkg/utils/probe_helper.go``: ``ReadyReplicas >= 1``), else Available is False
(``ProbeUnavailable``, with the reason); all probed: True (``ProbeAvailable``). The kubelet counts the agent's
pod ready while its readiness probe (an HTTP GET) answers 2xx or 3xx. Nothing in OCM sets Degraded for a
template add-on: that condition is left to agents writing their own status, which this one (no API access) does
not.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.federation.certificates import CertificateAuthority, create_cluster_identity
from tests.fleet.test_addon_agent import _install, agent

__all__ = ["agent"]  # a fixture

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Condition:
    status: str
    reason: str
    message: str = ""


def probed_deployments(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The Deployments of an AddOnTemplate that OCM's workload prober probes."""
    manifests = template["spec"]["agentSpec"]["workload"]["manifests"]
    return [m for m in manifests if m["kind"] == "Deployment" and m["spec"].get("replicas", 1) != 0]


def available(template: dict[str, Any], feedback: dict[str, dict[str, int]]) -> Condition:
    """The Available condition OCM's add-on manager sets; ``feedback``: the work agent's WellKnownStatus values
    (``Replicas``, ``ReadyReplicas``) per probed Deployment name (absent: not returned yet)."""
    probed = probed_deployments(template)
    returned = [d for d in probed if d["metadata"]["name"] in feedback]
    if probed and not returned:
        return Condition("Unknown", "NoProbeResult")
    for deployment in returned:
        values = feedback[deployment["metadata"]["name"]]
        if values["Replicas"] != 0 and values["ReadyReplicas"] < 1:
            return Condition("False", "ProbeUnavailable", f"readyReplica is {values['ReadyReplicas']}")
    return Condition("True", "ProbeAvailable")


def _template() -> dict[str, Any]:
    [path] = (ROOT / "manifests" / "hub" / "addon").glob("addontemplate-*.yaml")
    template: dict[str, Any] = yaml.safe_load(path.read_text())
    return template


def _kubelet_ready(port: int, probe: dict[str, Any], container: dict[str, Any]) -> bool:
    """The readiness probe as the kubelet runs it: an HTTP GET of its path on the named container port."""
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["httpGet"]["port"] in named  # the probe's port is the agent's
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", timeout=5) as answer:
            return 200 <= int(answer.status) < 400
    except urllib.error.HTTPError:
        return False


@pytest.fixture
def rendered_agent() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    template = _template()
    [deployment] = probed_deployments(template)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    # The agent listens where the probe looks (the tests start it on a free port instead).
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f"--port={named[container['readinessProbe']['httpGet']['port']]}" in container["args"]
    assert container["command"] == ["python", "-m", "fleet.addon_agent"]
    yield deployment["metadata"]["name"], template, container


def test_the_rendered_template_has_exactly_the_agent_probed() -> None:
    template = _template()
    assert [d["metadata"]["name"] for d in probed_deployments(template)] == ["fleet-collaborator"]
    [deployment] = probed_deployments(template)
    assert deployment["spec"]["replicas"] == 1  # 0 would never be probed: Available without any check


@pytest.mark.parametrize(
    ("feedback", "expected"),
    [
        ({}, Condition("Unknown", "NoProbeResult")),
        ({"fleet-collaborator": {"Replicas": 1, "ReadyReplicas": 0}}, Condition("False", "ProbeUnavailable")),
        ({"fleet-collaborator": {"Replicas": 1, "ReadyReplicas": 1}}, Condition("True", "ProbeAvailable")),
        ({"fleet-collaborator": {"Replicas": 0, "ReadyReplicas": 0}}, Condition("True", "ProbeAvailable")),
    ],
)
def test_ocms_rules_over_the_agents_feedback(feedback: dict[str, dict[str, int]], expected: Condition) -> None:
    got = available(_template(), feedback)
    assert (got.status, got.reason) == (expected.status, expected.reason)


def test_the_add_on_is_available_exactly_while_the_agent_has_a_usable_registration(
    agent: tuple[int, Path], rendered_agent: tuple[str, dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    port, secret = agent
    name, template, container = rendered_agent
    probe = container["readinessProbe"]

    def condition() -> Condition:
        ready = _kubelet_ready(port, probe, container)
        return available(template, {name: {"Replicas": 1, "ReadyReplicas": 1 if ready else 0}})

    assert condition().status == "False"  # no registration certificate yet
    ca = CertificateAuthority.create(tmp_path / "ca")
    mine = create_cluster_identity(tmp_path / "mine", "eu-west-a", ca)
    _install(secret, mine.certificate, mine.key)
    assert condition() == Condition("True", "ProbeAvailable")
    theirs = create_cluster_identity(tmp_path / "theirs", "eu-west-b", ca)
    _install(secret, theirs.certificate, theirs.key)  # another cluster's registration: not this cluster's identity
    assert condition().status == "False"
