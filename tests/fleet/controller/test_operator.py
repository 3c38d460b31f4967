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

import kmock
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.controller.identity import CSR_KEPT_AFTER_ISSUANCE, OCM_RENEWAL_LEFT, expected_subject, key_digest
from fleet.hub import collaborator_user
from fleet.validation import validate_documents

from .conftest import klusterlet_user, placement_decision, registration_csr, sign_registration
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
            # The hub's, shared by every job: the CA and the controller's own identity.
            left = [o for o in hub.objects(api) if o["metadata"]["namespace"] != "fleet-system"]
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


CSRS = "certificates.k8s.io/v1/certificatesigningrequests"
ADDONS = "addon.open-cluster-management.io/v1alpha1/managedclusteraddons"
CONFIGMAPS = "v1/configmaps"
WORKS = "work.open-cluster-management.io/v1/manifestworks"


def _hub_ca(hub: Hub) -> tuple[str, str]:
    secret = next(s for s in hub.objects("v1/secrets") if s["metadata"]["name"] == "fleet-hub-ca")
    return base64.b64decode(secret["data"]["tls.crt"]).decode(), base64.b64decode(secret["data"]["tls.key"]).decode()


def _openssh(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


async def _register(
    hub: Hub, cluster: str, *, at: datetime.datetime | None = None, minutes: float = 24 * 60, **csr: Any
) -> ec.EllipticCurvePrivateKey:
    """OCM signs a registration of ``cluster`` (at ``at``, valid ``minutes``): its CSR appears on the hub."""
    certificate, key = sign_registration(
        *_hub_ca(hub), cluster, not_before=at, validity=datetime.timedelta(minutes=minutes)
    )
    await hub.create(CSRS, None, registration_csr(certificate, cluster, created=at, **csr))
    return key


async def _addon(hub: Hub, cluster: str, user: str | None = None) -> None:
    """The cluster's ManagedClusterAddOn with the registration subject the hub's add-on manager reports."""
    subject = expected_subject(cluster)
    status = {
        "namespace": "fleet-collaborator",
        "registrations": [
            {
                "signerName": "fleet.dev/collaborator",
                "subject": {"user": user or subject.user, "groups": list(subject.groups)},
            }
        ],
    }
    body = {
        "apiVersion": "addon.open-cluster-management.io/v1alpha1",
        "kind": "ManagedClusterAddOn",
        "metadata": {"name": "fleet-collaborator", "namespace": cluster},
        "spec": {"installNamespace": "fleet-collaborator"},
    }
    await hub.create(ADDONS, cluster, body)
    await hub.patch_status(ADDONS, cluster, "fleet-collaborator", status)


def _records(hub: Hub) -> dict[str, dict[str, Any]]:
    return {
        o["data"]["cluster"]: o
        for o in hub.objects(CONFIGMAPS)
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "collaborator-identity"
    }


def _work_key(hub: Hub, cluster: str) -> str | None:
    work = next(w for w in hub.objects(WORKS) if w["metadata"]["namespace"] == cluster)
    template = work["spec"]["workload"]["manifests"][1]["spec"]["template"]
    key: str | None = (template["metadata"].get("annotations") or {}).get("fleet.dev/client-key")
    return key


def _allowed(hub: Hub) -> dict[str, str]:
    clients = next(o for o in hub.objects(CONFIGMAPS) if o["metadata"]["name"] == "digits-clients")
    allowed: dict[str, str] = json.loads(clients["data"]["allowed-clients.json"])["collaborators"]
    return allowed


def _registered(hub: Hub) -> dict[str, Any]:
    text = hub.job()["metadata"].get("annotations", {}).get("federation.fleet.dev/collaborators", "{}")
    found: dict[str, Any] = json.loads(text)
    return found


async def test_a_cluster_s_own_certificate_is_registered_and_one_another_cluster_had_signed_is_refused(
    hub: Hub,
) -> None:
    runs = RecordedRuns()
    async with Operator(hub, runs):
        await eventually(lambda: any(s["metadata"]["name"] == "fleet-hub-ca" for s in hub.objects("v1/secrets")))
        for cluster in CLUSTERS:
            await _addon(hub, cluster)
        key_a = await _register(hub, "eu-west-a")
        # eu-central-c's klusterlet has the hub sign a certificate in eu-west-b's name: OCM approves it.
        await _register(hub, "eu-west-b", requester=klusterlet_user("eu-central-c"))
        await eventually(lambda: "eu-west-a" in _records(hub), what="eu-west-a's identity recorded")
        await start_job(hub, identities=False)
        await make_ready(hub, CLUSTERS)
        await eventually(lambda: "eu-west-a" in _registered(hub), what="the registration recorded")
        await eventually(lambda: "CollaboratorRejected" in hub.event_reasons(), what="the forgery refused")
        await eventually(lambda: "NoRegistrationCertificate" in hub.event_reasons(), what="c's missing one told")
        await asyncio.sleep(0.5)  # more reconciles: nothing registered twice
        # Pods run on all three, but only eu-west-a can sign in: the job waits for a second collaborator.
        assert phase(hub) == "Waiting" and "waiting for eu-west-b, eu-central-c" in hub.job()["status"]["message"]
        assert runs.registered == [("eu-west-a", _openssh(key_a))]
        assert set(_records(hub)) == {"eu-west-a"}
        assert _work_key(hub, "eu-west-b") is None  # no identity of its own: its SuperNode would be refused
        key_c = await _register(hub, "eu-central-c")  # its own, at last
        await eventually(lambda: phase(hub) == "Running", what="Running with a and c")
        await eventually(lambda: "eu-central-c" in _registered(hub), what="c registered")
    assert sorted(runs.registered) == sorted([("eu-west-a", _openssh(key_a)), ("eu-central-c", _openssh(key_c))])
    assert _records(hub)["eu-west-a"]["metadata"]["namespace"] == "fleet-system"
    assert _work_key(hub, "eu-west-a") == key_digest(_openssh(key_a))
    assert _registered(hub)["eu-west-a"] == {"key": key_digest(_openssh(key_a)), "node": 1000}
    # Every call to the SuperLink presented the controller's own certificate, kept in its Secret.
    assert runs.presented == {"fleet:operator"}
    assert any(s["metadata"]["name"] == "fleet-operator" for s in hub.objects("v1/secrets"))
    assert set(_allowed(hub).values()) == set(CLUSTERS)


async def test_the_subject_the_hub_reports_is_the_one_a_certificate_must_carry(hub: Hub) -> None:
    runs = RecordedRuns()
    async with Operator(hub, runs):
        await eventually(lambda: any(s["metadata"]["name"] == "fleet-hub-ca" for s in hub.objects("v1/secrets")))
        await _addon(hub, "eu-central-c", user="custom-user-c")
        await _register(hub, "eu-central-c")  # the default subject, which the hub no longer gives c
        await start_job(hub, identities=False)
        await eventually(lambda: "custom-user-c" in _allowed(hub), what="c's reported subject in the allow-list")
    assert "eu-central-c" not in _records(hub)
    assert collaborator_user("eu-central-c") not in _allowed(hub)


async def test_a_controller_restarted_two_hours_after_issuance_still_registers_the_keys(hub: Hub) -> None:
    issued = datetime.datetime.now(datetime.UTC)
    keys = {}
    async with Operator(hub, RecordedRuns(), clock=lambda: issued):
        await eventually(lambda: any(s["metadata"]["name"] == "fleet-hub-ca" for s in hub.objects("v1/secrets")))
        for cluster in CLUSTERS:
            keys[cluster] = await _register(hub, cluster, at=issued)
        await eventually(lambda: set(_records(hub)) == set(CLUSTERS), what="the identities recorded")
        # Kubernetes' CSR cleaner deletes them an hour after approval (polling hourly): two hours on, none is left.
        for csr in hub.objects(CSRS):
            await hub.request("DELETE", collection(CSRS, None) + f"/{csr['metadata']['name']}")
        assert not hub.objects(CSRS)
    later = issued + 2 * CSR_KEPT_AFTER_ISSUANCE
    runs = RecordedRuns()
    async with Operator(hub, runs, clock=lambda: later):
        await start_job(hub, identities=False)
        await make_ready(hub, CLUSTERS)
        await eventually(lambda: phase(hub) == "Running")
        await eventually(lambda: len(runs.registered) == 3, what="three keys registered")
    assert sorted(runs.registered) == sorted((c, _openssh(k)) for c, k in keys.items())
    assert {c: _work_key(hub, c) for c in CLUSTERS} == {c: key_digest(_openssh(k)) for c, k in keys.items()}


async def test_a_renewed_short_lived_certificate_replaces_the_key_and_restarts_the_collaborator(hub: Hub) -> None:
    # Certificates of 10 minutes: the spoke renews one with a new key once 20-25% of its life is left.
    start = datetime.datetime.now(datetime.UTC)
    now = [start]
    runs = RecordedRuns()
    async with Operator(hub, runs, clock=lambda: now[0]):
        await eventually(lambda: any(s["metadata"]["name"] == "fleet-hub-ca" for s in hub.objects("v1/secrets")))
        first = {c: await _register(hub, c, at=start, minutes=10) for c in CLUSTERS}
        await eventually(lambda: set(_records(hub)) == set(CLUSTERS), what="the identities recorded")
        await start_job(hub, identities=False)
        await make_ready(hub, CLUSTERS)
        await eventually(lambda: phase(hub) == "Running")
        await eventually(lambda: len(_registered(hub)) == 3, what="three keys registered")
        old_node = _registered(hub)["eu-west-a"]["node"]
        now[0] = start + datetime.timedelta(minutes=10 * (1 - OCM_RENEWAL_LEFT[1]))
        renewed = await _register(hub, "eu-west-a", at=now[0], minutes=10)
        digest = key_digest(_openssh(renewed))
        await eventually(lambda: _work_key(hub, "eu-west-a") == digest, what="the collaborator restarted")
        await eventually(lambda: _registered(hub)["eu-west-a"]["key"] == digest, what="the renewed key recorded")
        await eventually(lambda: "CollaboratorKeyRenewed" in hub.event_reasons(), what="the Event")
        # Past the first certificates' end the renewed one still serves; the old key is refused for good.
        now[0] = start + datetime.timedelta(minutes=11)
        await asyncio.sleep(0.5)
        assert _work_key(hub, "eu-west-a") == digest
    assert runs.unregistered == [old_node]
    assert _openssh(renewed) in runs.live_keys().values()
    assert _openssh(first["eu-west-a"]) not in runs.live_keys().values()
    assert _records(hub)["eu-west-a"]["data"]["tls.crt"] != ""
    assert _work_key(hub, "eu-west-b") is None  # its certificate ended, and it renewed none: no key to sign with


async def test_a_cluster_that_leaves_the_job_is_unregistered_and_dropped_from_the_allow_list(hub: Hub) -> None:
    runs = RecordedRuns()
    async with Operator(hub, runs):
        await eventually(lambda: any(s["metadata"]["name"] == "fleet-hub-ca" for s in hub.objects("v1/secrets")))
        for cluster in CLUSTERS:
            await _register(hub, cluster)
        await eventually(lambda: set(_records(hub)) == set(CLUSTERS), what="the identities recorded")
        await start_job(hub, identities=False)
        await make_ready(hub, CLUSTERS)
        await eventually(lambda: len(_registered(hub)) == 3, what="three keys registered")
        node_c = _registered(hub)["eu-central-c"]["node"]
        decision = placement_decision(JOB.namespace, JOB.name, CLUSTERS[:2])
        await hub.patch_status(
            "cluster.open-cluster-management.io/v1beta1/placementdecisions",
            JOB.namespace,
            decision["metadata"]["name"],
            decision["status"],
        )
        await eventually(lambda: "eu-central-c" not in _registered(hub), what="c unregistered")
        await eventually(lambda: len(hub.objects(WORKS)) == 2, what="c's collaborator removed")
        await eventually(lambda: "CollaboratorRemoved" in hub.event_reasons(), what="the Event")
    assert runs.unregistered == [node_c]
    assert "eu-central-c" not in _allowed(hub).values()


def _server_names(hub: Hub) -> list[str]:
    from cryptography import x509

    secret = next(s for s in hub.objects("v1/secrets") if s["metadata"]["name"] == "digits-superlink-tls")
    certificate = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


async def test_a_load_balancer_address_that_appears_later_is_in_the_reissued_certificate(hub: Hub) -> None:
    async with Operator(hub, RecordedRuns()):
        await start_job(hub)
        await eventually(lambda: _server_names(hub), what="the SuperLink's certificate")
        assert "203.0.113.7" not in _server_names(hub)
        first = hub.objects("apps/v1/deployments")[0]["spec"]["template"]["metadata"]["annotations"]
        # The cloud provider's load balancer controller reports the address.
        ingress = {"loadBalancer": {"ingress": [{"ip": "203.0.113.7", "ipMode": "VIP"}]}}
        await hub.patch_status("v1/services", JOB.namespace, "digits-listener-lb", ingress)
        await eventually(lambda: "203.0.113.7" in _server_names(hub), what="the certificate issued again")

        def replaced() -> bool:
            template = hub.objects("apps/v1/deployments")[0]["spec"]["template"]["metadata"]["annotations"]
            return bool(template["fleet.dev/server-certificate"] != first["fleet.dev/server-certificate"])

        await eventually(replaced, what="the SuperLink replaced to serve it")
        assert "hub.example" in _server_names(hub)  # the NodePort listener's node, still named
        await eventually(lambda: hub.job()["status"]["listeners"][1]["address"] == "203.0.113.7:9443")


async def test_the_api_server_is_asked_only_for_the_objects_the_controller_labelled(hub: Hub) -> None:
    # kopf passes settings.watching.label_selectors and field_selectors to its lists and watches
    # (kopf _cogs/clients/watching.py and fetching.py): the API server filters, not the controller's memory.
    from urllib.parse import parse_qs, urlsplit

    async with Operator(hub, RecordedRuns()):
        await start_job(hub)
    watched = ("secrets", "configmaps", "deployments", "services", "persistentvolumeclaims", "manifestworks")
    watched += ("certificatesigningrequests", "managedclusteraddons")
    selectors: dict[str, set[str]] = {}
    for request in hub.server:
        url = urlsplit(str(request.url))
        plural = url.path.rstrip("/").rsplit("/", 1)[-1]
        if request.method != kmock.method.GET or plural not in watched:
            continue  # not a list or watch (a get names its object last)
        query = parse_qs(url.query)
        selectors.setdefault(plural, set()).add(
            ",".join(query.get("labelSelector", []) + query.get("fieldSelector", [])) or "(everything)"
        )
    owned = "app.kubernetes.io/managed-by=fleet-controller"
    for plural in watched[:6]:
        assert selectors.get(plural) == {owned}, (plural, selectors.get(plural))
    assert selectors["certificatesigningrequests"] == {"open-cluster-management.io/addon-name=fleet-collaborator"}
    assert selectors["managedclusteraddons"] == {"metadata.name=fleet-collaborator"}
