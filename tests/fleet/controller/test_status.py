"""``fleet status`` against a hub: job statuses read from FederatedLearning resources."""

from __future__ import annotations

from typing import Any

import kmock
import kubernetes
import pytest

from fleet.controller.hub import HubClient
from fleet.controller.status import HubStatusSource
from fleet.models import Phase
from tests.fleet.kubeconfig import write_kubeconfig

from .conftest import resource

pytestmark = pytest.mark.asyncio


def _source(server: kmock.KubernetesEmulator, namespace: str | None = None) -> HubStatusSource:
    configuration = kubernetes.client.Configuration()
    configuration.host = str(server.servers[0].url).rstrip("/")
    return HubStatusSource(namespace=namespace, _client=HubClient(kubernetes.client.ApiClient(configuration)))


def _job(name: str, namespace: str, status: dict[str, Any]) -> dict[str, Any]:
    body = resource()
    body["metadata"].update(name=name, namespace=namespace)
    body["status"] = status
    return body


async def test_hub_statuses_by_namespace_and_name(kmock: kmock.KubernetesEmulator) -> None:
    fl = "federation.fleet.dev/v1alpha1/federatedlearnings"
    kmock.objects[fl, "team-b", "digits"] = _job("digits", "team-b", {"phase": "Running", "currentRound": 2})
    kmock.objects[fl, "team-a", "mnist"] = _job("mnist", "team-a", {"phase": "Completed", "currentRound": 5})
    source = _source(kmock)
    found = await _in_thread(source.statuses)
    assert [(s.job, s.status.phase, s.status.current_round) for s in found] == [
        ("mnist", Phase.COMPLETED, 5),
        ("digits", Phase.RUNNING, 2),
    ]
    assert found[0].source == "hub: FederatedLearning team-a/mnist"
    one = await _in_thread(_source(kmock, "team-b").statuses, "digits")
    assert [s.job for s in one] == ["digits"]
    assert await _in_thread(_source(kmock, "team-b").statuses, "absent") == []


async def test_an_unreadable_status_names_the_resource_and_hides_no_other(kmock: kmock.KubernetesEmulator) -> None:
    fl = "federation.fleet.dev/v1alpha1/federatedlearnings"
    kmock.objects[fl, "team-a", "bad"] = _job("bad", "team-a", {"phase": "Sleeping"})
    kmock.objects[fl, "team-a", "good"] = _job("good", "team-a", {"phase": "Completed"})
    bad, good = await _in_thread(_source(kmock).statuses)
    assert bad.job == "bad" and "team-a/bad: expected a FederatedLearningStatus" in bad.problem
    assert good.job == "good" and not good.problem and good.status.phase is Phase.COMPLETED


async def _in_thread(function: Any, *args: Any) -> Any:
    import asyncio

    # The official client is synchronous; the mock server answers on this loop meanwhile.
    return await asyncio.to_thread(function, *args)


async def test_fleet_status_reads_the_hub_through_a_kubeconfig(kmock: kmock.KubernetesEmulator, tmp_path: Any) -> None:
    import json

    from click.testing import CliRunner

    from fleet.cli import main

    fl = "federation.fleet.dev/v1alpha1/federatedlearnings"
    status = {"phase": "Running", "currentRound": 3, "totalRounds": 5, "participatingClusters": ["eu-a", "eu-b"]}
    kmock.objects[fl, "team-a", "mnist"] = _job("mnist", "team-a", status)
    kubeconfig = write_kubeconfig(tmp_path, str(kmock.servers[0].url).rstrip("/"))
    runner = CliRunner()
    result = await _in_thread(runner.invoke, main, ["status", "--kubeconfig", str(kubeconfig), "--output", "json"])
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)
    assert (only["job"], only["status"]["phase"], only["status"]["currentRound"]) == ("mnist", "Running", 3)
    table = await _in_thread(runner.invoke, main, ["status", "--kubeconfig", str(kubeconfig)])
    assert "mnist" in table.output and "3/5" in table.output and "eu-a, eu-b" in table.output
    missing = await _in_thread(runner.invoke, main, ["status", "absent", "--kubeconfig", str(kubeconfig)])
    assert missing.exit_code == 1 and "no status for job 'absent' on the hub" in missing.output
