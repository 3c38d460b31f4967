"""Hub objects for the controller's tests: a job's FederatedLearning resource, decisions, statuses."""

from __future__ import annotations

import base64
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.claims import dataset_claim
from fleet.controller.identity import OCM_CERTIFICATE_LIFETIME
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


def sign_registration(
    ca_certificate: str,
    ca_key: str,
    cluster: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    not_before: datetime.datetime | None = None,
    validity: datetime.timedelta = OCM_CERTIFICATE_LIFETIME,
) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """A certificate as the hub's add-on manager signs a CustomSigner registration: the add-on's default subject
    for ``cluster`` (what the CSR asks for), a fresh P-256 key (what the klusterlet makes per CSR)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    from fleet.federation.certificates import collaborator_subject

    key = key or ec.generate_private_key(ec.SECP256R1())
    authority = x509.load_pem_x509_certificate(ca_certificate.encode())
    signer: Any = serialization.load_pem_private_key(ca_key.encode(), None)
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(collaborator_subject(cluster))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key


def klusterlet_user(cluster: str, agent: str = "x7k2q") -> str:
    """The user a cluster's klusterlet is on the hub (ocm ``pkg/registration/register/csr/csr.go``)."""
    return f"system:open-cluster-management:{cluster}:{agent}"


def registration_csr(
    certificate: str | None,
    cluster: str,
    *,
    requester: str | None = None,
    name: str | None = None,
    created: datetime.datetime | None = None,
) -> dict[str, Any]:
    """An add-on registration CSR as the hub's API returns it once signed: labelled for ``cluster`` (a label
    anyone can set), ``spec.username`` the requester's (the API server sets it; by default ``cluster``'s own
    klusterlet), the issued certificate in ``status.certificate``."""
    created = created or datetime.datetime.now(datetime.UTC)
    body: dict[str, Any] = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {
            "name": name or f"addon-{cluster}-fleet-collaborator-{created.strftime('%H%M%S%f')}",
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "labels": {
                "open-cluster-management.io/cluster-name": cluster,
                "open-cluster-management.io/addon-name": "fleet-collaborator",
            },
        },
        "spec": {
            "signerName": "fleet.dev/collaborator",
            "request": "",
            "usages": ["digital signature", "key encipherment", "client auth"],
            "username": requester or klusterlet_user(cluster),
            "groups": ["system:open-cluster-management:managed-clusters", "system:authenticated"],
        },
        "status": {
            "conditions": [{"type": "Approved", "status": "True", "reason": "AutoApprovedByHubCSRApprovingController"}]
        },
    }
    if certificate is not None:
        body["status"]["certificate"] = base64.b64encode(certificate.encode()).decode()
    return body


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
