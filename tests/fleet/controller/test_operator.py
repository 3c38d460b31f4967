"""The running operator against an HTTP mock of the Kubernetes API (kmock) serving the project's CRD and OCM kinds.

The test plays everyone else on the hub: the user creating the job, OCM's Placement controller (PlacementDecisions),
the work agents (ManifestWork status feedback), the Deployment controller (the SuperLink's available replicas),
and the ServerApp (progress events in ``progress.jsonl`` under the job's model storage, mapped into a temporary
folder). The Flower run submission is recorded, not performed (`_RecordedRuns`); the real Flower side is
exercised by ``fleet run``'s own tests.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from fleet.validation import validate_documents

from .conftest import placement_decision
from .operator_support import (
    CLUSTERS,
    FL,
    JOB,
    OWNED_PATHS,
    ApiServer,
    Hub,
    Operator,
    RecordedRuns,
    collection,
    eventually,
    job_resource,
    make_ready,
    phase,
    start_job,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=ApiServer)]


async def test_a_job_goes_waiting_running_completed_round_by_round(hub: Hub, crds_dir: Path) -> None:
    runs = RecordedRuns()
    async with Operator(hub, runs):
        await start_job(hub)
        assert phase(hub) == "Waiting"
        await make_ready(hub, CLUSTERS[:2])
        await eventually(lambda: phase(hub) == "Running", what="Running")
        assert runs.submitted == [("fl-digits", "digits", 3)]
        assert hub.job()["metadata"]["annotations"]["federation.fleet.dev/run-id"] == "41"

        seen_rounds = []
        for number in (1, 2, 3):
            hub.progress(
                {
                    "event": "round",
                    "round": number,
                    "participants": CLUSTERS[:2],
                    "metrics": {"accuracy": 0.5 + number / 10},
                    "time": f"2026-01-01T00:0{number}:00Z",
                }
            )

            def at_round(n: int = number) -> dict[str, Any] | None:
                status: dict[str, Any] = hub.job()["status"]
                return status if status.get("currentRound") == n else None

            status = await eventually(at_round, what=f"round {number}")
            seen_rounds.append([r["round"] for r in status["rounds"]])
        assert seen_rounds == [[1], [1, 2], [1, 2, 3]]
        hub.progress({"event": "completed", "metrics": {"accuracy": 0.93}})
        await eventually(lambda: phase(hub) == "Completed", what="Completed")
        status = hub.job()["status"]
        assert status["modelPath"] == "/models/digits/model.pt"
        assert status["finalMetrics"] == {"accuracy": 0.93}
        await eventually(lambda: not hub.objects("work.open-cluster-management.io/v1/manifestworks"))
        superlink = hub.objects("apps/v1/deployments")[0]
        assert superlink["spec"]["replicas"] == 0
        await eventually(lambda: {"Running", "RoundCompleted", "Completed"} <= set(hub.event_reasons()), what="Events")
        assert len(runs.submitted) == 1

    # Everything the controller wrote validates against the upstream CRDs and Kubernetes' schemas.
    from fleet.crd import federated_learning_crd_spec

    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "federatedlearnings.federation.fleet.dev"},
        "spec": federated_learning_crd_spec(),
    }
    documents: list[tuple[str, dict[str, Any]]] = [("crd", crd), ("job", _without_server_fields(hub.job()))]
    for api in OWNED_PATHS:
        documents += [(api, _without_server_fields(o)) for o in hub.objects(api)]
    report = validate_documents(documents, crds_dir, kubeconform=False)
    assert report.ok, "\n".join(report.lines())


def _without_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    obj.pop("status", None) if obj.get("kind") != "FederatedLearning" else None
    return obj


async def test_transient_409_and_500_answers_never_fail_the_job(hub: Hub) -> None:
    runs = RecordedRuns()
    # The first creation of the SuperLink answers 500 (after storing it, as a server failing late would), the
    # first status write 409, the first ManifestWork creation 503.
    hub.server["post", "/apis/apps/v1/namespaces/fl-digits/deployments"][:1] << 500
    (
        hub.server[
            "patch", "/apis/federation.fleet.dev/v1alpha1/namespaces/fl-digits/federatedlearnings/digits/status"
        ][:1]
        << 409
    )
    hub.server["post", "/apis/work.open-cluster-management.io/v1/namespaces/eu-west-a/manifestworks"][:1] << 503
    async with Operator(hub, runs) as operator:
        await start_job(hub)
        await make_ready(hub, CLUSTERS)
        await eventually(lambda: phase(hub) == "Running", what="Running despite the errors")
        hub.progress({"event": "round", "round": 1, "participants": CLUSTERS, "metrics": {}, "time": None})
        hub.progress({"event": "completed", "metrics": {"accuracy": 0.9}})
        await eventually(lambda: phase(hub) == "Completed", what="Completed despite the errors")
        errors = operator.controller.metrics.reconcile_errors.labels("transient")._value.get()
    assert errors >= 3  # each injected error was met, and retried
    assert len(hub.objects("apps/v1/deployments")) == 1
    assert runs.submitted == [("fl-digits", "digits", 3)]


async def test_deleting_the_job_removes_everything_on_hub_and_spokes(hub: Hub) -> None:
    runs = RecordedRuns()
    async with Operator(hub, runs):
        await start_job(hub)
        await make_ready(hub, CLUSTERS)
        await eventually(lambda: phase(hub) == "Running")
        assert hub.job()["metadata"]["finalizers"] == ["federation.fleet.dev/cleanup"]
        await hub.request("DELETE", collection(FL, JOB.namespace) + "/digits")
        await eventually(lambda: not hub.job(), what="the job gone")
        for api in OWNED_PATHS:
            left = [o for o in hub.objects(api) if o["metadata"]["name"] != "fleet-hub-ca"]  # the hub's, shared
            assert not left, f"{api} left behind"
        assert runs.stopped == [41]


async def test_a_restart_mid_job_creates_no_duplicates_and_does_not_resubmit(hub: Hub) -> None:
    runs = RecordedRuns()
    async with Operator(hub, runs):
        await start_job(hub)
        await make_ready(hub, CLUSTERS)
        await eventually(lambda: phase(hub) == "Running")
        hub.progress({"event": "round", "round": 1, "participants": CLUSTERS, "metrics": {}, "time": None})
        await eventually(lambda: hub.job()["status"].get("currentRound") == 1)
    creations = hub.requests("POST", "/namespaces/")
    async with Operator(hub, runs):
        hub.progress({"event": "round", "round": 2, "participants": CLUSTERS, "metrics": {}, "time": None})
        await eventually(lambda: hub.job()["status"].get("currentRound") == 2, what="round 2 after the restart")
        await asyncio.sleep(0.5)  # several timer reconciles
        assert [r["round"] for r in hub.job()["status"]["rounds"]] == [1, 2]
    new_posts = hub.requests("POST", "/namespaces/") - creations
    events_posted = hub.requests("POST", "/events")
    assert new_posts <= events_posted, "the restarted controller created objects again"
    assert len(runs.submitted) == 1
    assert len(hub.objects("work.open-cluster-management.io/v1/manifestworks")) == 3


async def test_too_few_clusters_past_the_timeout_fails_with_a_reason(hub: Hub) -> None:
    runs = RecordedRuns()
    async with Operator(hub, runs):
        await hub.create(FL, JOB.namespace, job_resource(waitTimeoutSeconds=1))
        await hub.create(
            "cluster.open-cluster-management.io/v1beta1/placementdecisions",
            JOB.namespace,
            placement_decision(JOB.namespace, JOB.name, CLUSTERS[:1]),
        )
        await eventually(lambda: phase(hub) == "Failed", what="Failed")
        status = hub.job()["status"]
        succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
        assert succeeded["reason"] == "TooFewClusters"
        assert "minAvailableClients" in status["message"]
        assert not runs.submitted
        finished = datetime.datetime.fromisoformat(status["finishedAt"].replace("Z", "+00:00"))
        assert finished.tzinfo is not None


def _collaborator_csr(hub: Hub, cluster: str, *, signer: str = "hub") -> dict[str, Any]:
    """An add-on registration CSR as OCM leaves it once the hub signed it (or, with signer="other", a forgery)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    secret = next(s for s in hub.objects("v1/secrets") if s["metadata"]["name"] == "fleet-hub-ca")
    ca_cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    ca_key: Any = serialization.load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), None)
    if signer != "hub":
        ca_key = ec.generate_private_key(ec.SECP384R1())
    key = ec.generate_private_key(ec.SECP384R1())
    group = f"system:open-cluster-management:cluster:{cluster}:addon:fleet-collaborator"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, group),
            x509.NameAttribute(NameOID.COMMON_NAME, cluster),  # OCM's is longer than cryptography allows
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(ca_key, hashes.SHA384())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {
            "name": f"addon-{cluster}-fleet-collaborator-{signer}",
            "labels": {
                "open-cluster-management.io/cluster-name": cluster,
                "open-cluster-management.io/addon-name": "fleet-collaborator",
            },
        },
        "spec": {"signerName": "fleet.dev/collaborator", "request": "", "usages": ["client auth"]},
        "status": {"certificate": base64.b64encode(pem).decode()},
    }


async def test_collaborator_keys_from_the_add_on_registration_are_registered_once(hub: Hub) -> None:
    runs = RecordedRuns()
    async with Operator(hub, runs):
        csrs = "certificates.k8s.io/v1/certificatesigningrequests"
        await hub.create(csrs, None, _collaborator_csr(hub, "eu-west-a"))
        await hub.create(csrs, None, _collaborator_csr(hub, "eu-west-b", signer="other"))
        await start_job(hub)
        await make_ready(hub, CLUSTERS)
        await eventually(lambda: phase(hub) == "Running")
        await eventually(lambda: "CollaboratorRejected" in hub.event_reasons(), what="the forgery refused")
        await asyncio.sleep(0.5)  # more reconciles: nothing registered twice
    assert [cluster for cluster, _ in runs.registered] == ["eu-west-a"]
    assert runs.registered[0][1].startswith(b"ecdsa-sha2-nistp384 ")
