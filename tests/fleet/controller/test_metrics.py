"""The controller's metrics: jobs by phase stay exact as jobs move and go; every API request counts once, also
when reconciles of several jobs run at the same time."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import kmock
import kubernetes
import pytest

from fleet.controller.hub import HubClient
from fleet.controller.metrics import Metrics
from fleet.controller.objects import SECRET
from fleet.controller.operator import Controller
from fleet.models import FederatedLearningStatus, Phase


def _gauge(metrics: Metrics, name: str, labels: str) -> float:
    text = metrics.exposition().decode()
    match = re.search(rf"^{name}{{{re.escape(labels)}}} (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def _phases(metrics: Metrics) -> dict[str, float]:
    return {phase.value: _gauge(metrics, "fleet_jobs", f'phase="{phase.value}"') for phase in Phase}


def test_jobs_by_phase_follow_each_job() -> None:
    metrics = Metrics()
    metrics.observe("a", "one", FederatedLearningStatus(phase=Phase.WAITING))
    metrics.observe("a", "two", FederatedLearningStatus(phase=Phase.WAITING))
    metrics.observe("a", "one", FederatedLearningStatus(phase=Phase.RUNNING))
    metrics.observe("a", "one", FederatedLearningStatus(phase=Phase.RUNNING))  # the same status again
    metrics.observe("b", "one", FederatedLearningStatus(phase=Phase.FAILED))
    assert _phases(metrics) == {"Waiting": 1, "Running": 1, "Completed": 0, "Failed": 1}
    metrics.forget("a", "one")
    metrics.forget("a", "one")  # forgetting twice changes nothing
    metrics.forget("a", "never-seen")
    assert _phases(metrics) == {"Waiting": 1, "Running": 0, "Completed": 0, "Failed": 1}


@pytest.mark.asyncio
async def test_concurrent_requests_are_counted_once_each(kmock: kmock.KubernetesEmulator) -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = str(kmock.servers[0].url).rstrip("/")
    hub = HubClient(kubernetes.client.ApiClient(configuration))
    controller = Controller(hub)

    def reads(count: int) -> None:
        for i in range(count):
            hub.get(SECRET, "ns", f"missing-{i}")

    with ThreadPoolExecutor(4) as pool:
        await asyncio.gather(*(asyncio.wrap_future(pool.submit(reads, 25)) for _ in range(4)))
    assert _gauge(controller.metrics, "fleet_api_requests_total", 'method="GET"') == 100
    assert hub.request_count() == 100


def test_each_jobs_phase_round_and_collaborators_as_the_hub_sees_them() -> None:
    metrics = Metrics()
    running = FederatedLearningStatus(
        phase=Phase.RUNNING, current_round=2, total_rounds=5, participating_clusters=("alpha", "beta")
    )
    metrics.observe("fl-a", "a", running)
    assert _gauge(metrics, "fleet_job_phase", 'job="a",namespace="fl-a",phase="Running"') == 1
    assert _gauge(metrics, "fleet_job_phase", 'job="a",namespace="fl-a",phase="Waiting"') == 0
    assert _gauge(metrics, "fleet_job_current_round", 'job="a",namespace="fl-a"') == 2
    assert _gauge(metrics, "fleet_job_total_rounds", 'job="a",namespace="fl-a"') == 5
    # beta's collaborator goes down: it reads 0 (it was up), and gamma, expected but never up, reads 0 too.
    lost = running.model_copy(update={"participating_clusters": ("alpha",)})
    metrics.observe("fl-a", "a", lost, expected=("gamma",))
    values = {
        cluster: _gauge(metrics, "fleet_collaborator_up", f'collaborator="{cluster}",job="a",namespace="fl-a"')
        for cluster in ("alpha", "beta", "gamma")
    }
    assert values == {"alpha": 1, "beta": 0, "gamma": 0}
    metrics.forget("fl-a", "a")
    text = metrics.exposition().decode()
    assert 'job="a"' not in text
