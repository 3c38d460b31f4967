"""Hub objects for the controller's tests: a job's FederatedLearning resource, decisions, statuses."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from fleet.claims import dataset_claim
from fleet.controller.objects import PLACEMENT_LABEL, JobRef, collaborator_name
from fleet.models import (
    FederatedLearningSpec,
    Images,
    Job,
    Listener,
    ListenerType,
    ModelStorage,
    PVCStorage,
)
from fleet.quantity import Quantity

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def job(**changes: Any) -> Job:
    fields: dict[str, Any] = {
        "name": "digits",
        "namespace": "fl-digits",
        "images": Images(server="ghcr.io/fleet-fl/fleet-app:0.1.0", client="ghcr.io/fleet-fl/fleet-app:0.1.0"),
        "rounds": 3,
        "min_available_clients": 2,
        "max_clients": 3,
        "dataset": "digits",
        "storage": ModelStorage(pvc=PVCStorage(name="digits-model", size=Quantity("1Gi"), path="/models/digits")),
        "listeners": (
            Listener(name="server", type=ListenerType.NODE_PORT, port=30093),
            Listener(name="lb", type=ListenerType.LOAD_BALANCER, port=9443),
            Listener(name="route", type=ListenerType.ROUTE, port=443, host="digits.apps.hub.example"),
            Listener(name="web", type=ListenerType.INGRESS, port=443, host="digits.hub.example"),
        ),
        "cluster_sets": ("eu",),
        "wait_timeout_seconds": 600,
    }
    fields.update(changes)
    return Job(**fields)


def resource(definition: Job | None = None, *, uid: str = "uid-1", generation: int = 1) -> dict[str, Any]:
    definition = definition or job()
    spec = FederatedLearningSpec.from_job(definition, {"clusterSets": list(definition.cluster_sets)})
    return {
        "apiVersion": "federation.fleet.dev/v1alpha1",
        "kind": "FederatedLearning",
        "metadata": {
            "name": definition.name,
            "namespace": definition.namespace,
            "uid": uid,
            "generation": generation,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def placement_decision(namespace: str, placement: str, clusters: list[str], index: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1beta1",
        "kind": "PlacementDecision",
        "metadata": {
            "name": f"{placement}-decision-{index}",
            "namespace": namespace,
            "labels": {
                PLACEMENT_LABEL: placement,
                "cluster.open-cluster-management.io/decision-group-index": "0",
            },
        },
        "status": {"decisions": [{"clusterName": c, "reason": ""} for c in clusters]},
    }


def managed_cluster(name: str, dataset: str = "digits") -> dict[str, Any]:
    return {
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {"name": name, "labels": {"cluster.open-cluster-management.io/clusterset": "eu"}},
        "spec": {"hubAcceptsClient": True},
        "status": {"clusterClaims": [{"name": dataset_claim(dataset), "value": f"/data/{dataset}/{name}"}]},
    }


def work_status(
    namespace: str, name: str, available: int, *, progressing: tuple[str, str] | None = None
) -> dict[str, Any]:
    """A ManifestWork status as the work agent reports it: applied, with the Deployment's feedback."""
    values: list[dict[str, Any]] = [
        {"name": "ReadyReplicas", "fieldValue": {"type": "Integer", "integer": available}},
        {"name": "Replicas", "fieldValue": {"type": "Integer", "integer": 1}},
        {"name": "AvailableReplicas", "fieldValue": {"type": "Integer", "integer": available}},
    ]
    if progressing is not None:
        values += [
            {"name": "ProgressingReason", "fieldValue": {"type": "String", "string": progressing[0]}},
            {"name": "ProgressingMessage", "fieldValue": {"type": "String", "string": progressing[1]}},
        ]
    condition = {
        "type": "Applied",
        "status": "True",
        "reason": "AppliedManifestWorkComplete",
        "message": "Apply manifest work complete",
        "lastTransitionTime": "2026-01-01T00:00:05Z",
    }
    return {
        "conditions": [condition],
        "resourceStatus": {
            "manifests": [
                {
                    "resourceMeta": {
                        "ordinal": 1,
                        "group": "apps",
                        "version": "v1",
                        "kind": "Deployment",
                        "resource": "deployments",
                        "namespace": namespace,
                        "name": name,
                    },
                    "statusFeedback": {"values": values},
                    "conditions": [condition],
                }
            ]
        },
    }


def collaborator_deployment_name(namespace: str = "fl-digits", name: str = "digits") -> str:
    return collaborator_name(JobRef(name, namespace, ""))


@pytest_asyncio.fixture
async def hub(kmock: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """The mock hub: the kinds the controller uses served, three ManagedClusters holding `digits`."""
    from .operator_support import CLUSTERS, LAST_HUB, RESOURCES, Hub, seed

    for api, info in RESOURCES.items():
        kmock.resources[api] = kmock.ResourceInfo(
            kind=info["kind"],
            namespaced=info["namespaced"],
            subresources=set(info.get("subresources", [])),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        )
    for name in CLUSTERS:
        await seed(kmock, "cluster.open-cluster-management.io/v1/managedclusters", None, managed_cluster(name))
    the_hub = Hub(kmock, tmp_path)
    LAST_HUB[:] = [the_hub]
    yield the_hub
    await the_hub.session.close()
