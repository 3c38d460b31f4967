"""One reconcile as a pure function: desired objects, status and events for every phase."""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.controller.objects import (
    DESIRED_HASH,
    RUN_ID_ANNOTATION,
    JobRef,
    ObjectKey,
    TlsMaterial,
    key_of,
    server_hosts,
)
from fleet.controller.reconcile import JobState, Plan, Settings, reconcile
from fleet.federation.flower_launcher import ALLOWED_CLIENTS, CLIENT_CA, CLIENT_CERT
from fleet.federation.progress import Completed, RoundFinished
from fleet.hub import CLIENT_CERT_SECRET, collaborator_user
from fleet.models import FederatedLearningSpec, Framework, Listener, ListenerType, Phase
from fleet.runtimes import runtime_for
from fleet.validation import Status, validate_documents

from .conftest import (
    T0,
    collaborator_deployment_name,
    job,
    managed_cluster,
    placement_decision,
    resource,
)
from .work_agent import collaborator_status, deadline_exceeded

TLS = TlsMaterial("CA PEM\n", "CERT PEM\n", "KEY PEM\n", "SERVERAPP PEM\n", "SERVERAPP KEY\n")
CLUSTERS = ["eu-west-a", "eu-west-b", "eu-central-c"]


class Hub:
    """The objects of one job as the API server would hold them, for plans to act on."""

    def __init__(self, fl: dict[str, Any] | None = None, clusters: list[str] | None = None) -> None:
        self.fl = fl or resource()
        self.decisions: list[dict[str, Any]] = []
        self.claims = {name: _claims(name) for name in (clusters or CLUSTERS)}
        self.owned: dict[ObjectKey, dict[str, Any]] = {}
        self.now = T0

    def state(self, **changes: Any) -> JobState:
        fields: dict[str, Any] = {
            "resource": self.fl,
            "decisions": self.decisions,
            "claims": self.claims,
            "owned": dict(self.owned),
            "ca_pem": TLS.ca,
            "now": self.now,
            "settings": Settings(node_host="hub.example"),
            # Every cluster has a hub-signed identity unless a test says otherwise.
            "client_keys": {c: c[-1] * 64 for c in self.claims},
        }
        fields.update(changes)
        return JobState(**fields)

    def act(self, plan: Plan) -> None:
        for obj in plan.apply:
            self.owned[key_of(obj)] = obj
        for key in plan.delete:
            del self.owned[key]
        if plan.status_changed:
            self.fl = {
                **self.fl,
                "status": plan.status.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
        if plan.submit is not None:
            self.fl["metadata"] = {**self.fl["metadata"], "annotations": {RUN_ID_ANNOTATION: "7"}}

    def reconcile(self, seconds: float = 1, **changes: Any) -> Plan:
        self.now += datetime.timedelta(seconds=seconds)
        issued = changes.pop("issued_tls", None)
        plan = reconcile(self.state(**changes))
        if issued is not None:  # issued as the operator issues it: for the names the plan asks for
            plan = reconcile(self.state(**changes, issued_tls=replace(issued, hosts=plan.server_hosts)))
        self.act(plan)
        return plan

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for k, o in self.owned.items() if k.kind == kind]

    def set_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        key = ObjectKey(kind, namespace, name)
        self.owned[key] = {**self.owned[key], "status": status}


def _claims(name: str) -> dict[str, str]:
    return {c["name"]: c["value"] for c in managed_cluster(name)["status"]["clusterClaims"]}


def _ready_federation(hub: Hub) -> None:
    hub.set_status("Deployment", "fl-digits", "digits-superlink", {"availableReplicas": 1, "replicas": 1})


def _collaborators_available(hub: Hub, clusters: list[str]) -> None:
    for cluster in clusters:
        work = hub.owned[ObjectKey("ManifestWork", cluster, "fl-fl-digits-digits")]
        hub.set_status("ManifestWork", cluster, "fl-fl-digits-digits", collaborator_status(work, 1))


def test_a_new_job_asks_for_a_certificate_and_waits_for_placement() -> None:
    hub = Hub()
    plan = hub.reconcile()
    assert plan.needs_tls
    assert plan.status.phase is Phase.WAITING
    # The SuperLink's allow-list is there before the SuperLink; the SuperLink waits for its certificate.
    assert {k.kind for k in hub.owned} == {"ConfigMap", "PersistentVolumeClaim", "Service", "Route", "Ingress"}
    assert not hub.of_kind("Deployment")  # the SuperLink waits for its certificate
    plan = hub.reconcile(issued_tls=TLS)
    assert not plan.needs_tls
    kinds = sorted(k.kind for k in hub.owned)
    assert kinds.count("Deployment") == 1 and kinds.count("Secret") == 1
    assert kinds.count("Service") == 5  # the in-hub Service and one per listener
    secret = hub.of_kind("Secret")[0]
    assert base64.b64decode(secret["data"]["tls.crt"]).decode() == TLS.certificate
    assert base64.b64decode(secret["data"]["serverapp.key"]).decode() == TLS.serverapp_key
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "uid-1" for o in hub.owned.values())


def test_a_reconcile_with_nothing_new_changes_nothing() -> None:
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    hub.reconcile(issued_tls=TLS)
    again = hub.reconcile()
    assert not again.needs_tls
    assert (again.apply, again.delete, again.events, again.status_changed) == ((), (), (), False)


def test_each_selected_cluster_gets_a_collaborator_with_its_data_path_and_the_address() -> None:
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    hub.reconcile(issued_tls=TLS)
    works = {w["metadata"]["namespace"]: w for w in hub.of_kind("ManifestWork")}
    assert sorted(works) == sorted(CLUSTERS)
    work = works["eu-west-b"]
    assert "ownerReferences" not in work["metadata"]  # cross-namespace: removed by the finalizer instead
    configmap, deployment = work["spec"]["workload"]["manifests"]
    assert configmap["data"]["ca.crt"] == TLS.ca
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--superlink=hub.example:30093" in args
    assert '--node-config=data-path="/data/digits/eu-west-b" cluster-name="eu-west-b"' in args
    feedback = work["spec"]["manifestConfigs"][0]
    assert feedback["resourceIdentifier"]["name"] == deployment["metadata"]["name"]
    assert {"type": "WellKnownStatus"} in feedback["feedbackRules"]
    assert hub.fl["status"]["listeners"][0] == {
        "name": "server",
        "type": "NodePort",
        "port": 30093,
        "address": "hub.example:30093",
    }


def test_a_cluster_without_the_dataset_claim_gets_no_collaborator() -> None:
    hub = Hub()
    hub.claims["eu-west-b"] = {}
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    hub.reconcile(issued_tls=TLS)
    assert sorted(w["metadata"]["namespace"] for w in hub.of_kind("ManifestWork")) == [
        "eu-central-c",
        "eu-west-a",
    ]


def test_waiting_running_completed_round_by_round() -> None:
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    hub.reconcile(issued_tls=TLS)
    _ready_federation(hub)
    _collaborators_available(hub, CLUSTERS[:1])
    plan = hub.reconcile()
    assert plan.status.phase is Phase.WAITING and plan.submit is None
    _collaborators_available(hub, CLUSTERS[:2])
    plan = hub.reconcile()
    assert plan.submit is not None and plan.submit.clusters == ("eu-west-a", "eu-west-b")
    assert plan.status.phase is Phase.RUNNING
    round_one = RoundFinished(1, ("eu-west-a", "eu-west-b"), {"accuracy": 0.8}, "2026-01-01T00:01:00Z")
    plan = hub.reconcile(events=(round_one,))
    assert plan.submit is None and plan.status.current_round == 1
    assert [e.reason for e in plan.events] == ["RoundCompleted"]
    done = (RoundFinished(3, ("eu-west-a",), {"accuracy": 0.9}, None), Completed({"accuracy": 0.93}))
    plan = hub.reconcile(events=(round_one, *done))
    assert plan.status.phase is Phase.COMPLETED
    assert plan.status.model_path == "/models/digits/model.pt"
    assert plan.status.final_metrics == {"accuracy": 0.93}
    assert not hub.of_kind("ManifestWork")  # the spokes are freed
    superlink = next(o for o in hub.of_kind("Deployment"))
    assert superlink["spec"]["replicas"] == 0  # the federation scaled down, the model kept
    assert hub.of_kind("PersistentVolumeClaim")
    assert [k.kind for k in plan.delete] == ["ManifestWork"] * 3
    assert hub.reconcile().apply == ()


def test_a_collaborator_past_its_progress_deadline_fails_the_job() -> None:
    # The work agent's feedback, from the whole SuperNode Deployment the spoke serves (its Pod cannot pull its
    # image: the Deployment controller says only that the ReplicaSet timed out).
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS[:2])]
    hub.reconcile(issued_tls=TLS)
    work = hub.owned[ObjectKey("ManifestWork", "eu-west-a", "fl-fl-digits-digits")]
    status = collaborator_status(work, 0, deadline_exceeded(collaborator_deployment_name()))
    hub.set_status("ManifestWork", "eu-west-a", "fl-fl-digits-digits", status)
    plan = hub.reconcile()
    assert plan.status.phase is Phase.FAILED
    assert plan.status.conditions[3].reason == "CollaboratorNotStarting"
    assert "eu-west-a" in plan.status.message and "has timed out progressing" in plan.status.message
    assert "within 300 s" in plan.status.message and "image" in plan.status.message
    assert not hub.of_kind("ManifestWork")


def test_a_placement_that_drops_a_cluster_removes_its_collaborator() -> None:
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    hub.reconcile(issued_tls=TLS)
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS[:2])]
    plan = hub.reconcile()
    assert plan.delete == (ObjectKey("ManifestWork", "eu-central-c", "fl-fl-digits-digits"),)


def test_a_changed_spec_while_waiting_replaces_the_objects_it_changes() -> None:
    hub = Hub()
    hub.reconcile(issued_tls=TLS)
    before = {k: o["metadata"]["annotations"][DESIRED_HASH] for k, o in hub.owned.items()}
    changed = resource(job(images={"server": "ghcr.io/fleet-fl/fleet-app:0.2.0", "client": "x:1"}), generation=2)
    hub.fl = {**changed, "status": hub.fl["status"]}
    plan = hub.reconcile()
    assert [key_of(o) for o in plan.apply] == [ObjectKey("Deployment", "fl-digits", "digits-superlink")]
    assert plan.status.observed_generation == 2
    assert before  # the rest kept their hash


def test_an_invalid_spec_fails_the_job_and_removes_its_objects() -> None:
    hub = Hub()
    hub.reconcile(issued_tls=TLS)
    hub.fl = {**hub.fl, "spec": {**hub.fl["spec"], "maxClients": 0}}
    plan = hub.reconcile()
    assert plan.status.phase is Phase.FAILED and "spec.maxClients" in plan.status.message
    assert not hub.owned


def _openfl_hub() -> Hub:
    hub = Hub(resource(job(framework=Framework.OPENFL)))
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    hub.reconcile(issued_tls=TLS)
    return hub


def test_an_openfl_job_runs_openfl_s_aggregator_on_the_hub_with_the_plan_its_collaborators_get() -> None:
    hub = _openfl_hub()
    names = {(k.kind, k.name) for k in hub.owned if k.namespace == "fl-digits"}
    assert {("Deployment", "digits-aggregator"), ("Service", "digits-aggregator")} <= names
    assert {("ConfigMap", "digits-aggregator-plan"), ("ConfigMap", "digits-aggregator-keys")} <= names
    assert ("Secret", "digits-aggregator-tls") in names
    assert not any("superlink" in name for _, name in names)  # no Flower object
    users = sorted(collaborator_user(c) for c in CLUSTERS)
    aggregator_plan = hub.owned[ObjectKey("ConfigMap", "fl-digits", "digits-aggregator-plan")]["data"]
    assert yaml.safe_load(aggregator_plan["cols.yaml"]) == {"collaborators": users}
    network = yaml.safe_load(aggregator_plan["plan.yaml"])["network"]["settings"]
    # Where the collaborators dial (the first listener), the same in every plan: OpenFL hashes the whole plan.
    assert (network["agg_addr"], network["agg_port"], network["use_tls"], network["require_client_auth"]) == (
        "hub.example",
        30093,
        True,
        True,
    )
    keys = json.loads(
        hub.owned[ObjectKey("ConfigMap", "fl-digits", "digits-aggregator-keys")]["data"]["allowed-keys.json"]
    )
    assert keys == {collaborator_user(c): [c[-1] * 64] for c in CLUSTERS}  # the digests of the hub-vouched keys
    pod = hub.of_kind("Deployment")[0]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"][-2:] == ["plan", "initialize"]
    aggregator = pod["containers"][0]
    assert aggregator["command"][:3] == ["python", "-m", "fleet.app_openfl.launcher"]
    assert aggregator["command"][-2:] == ["aggregator", "start"]
    assert aggregator["ports"] == [{"name": "fleet", "containerPort": 30093, "protocol": "TCP"}]
    assert {"name": "FLEET_OPENFL_ALLOWED_KEYS", "value": "/var/run/fleet/clients/allowed-keys.json"} in aggregator[
        "env"
    ]
    cert = next(v for v in pod["volumes"] if v["name"] == "cert")["projected"]["sources"][0]["secret"]
    assert cert["name"] == "digits-aggregator-tls"
    assert [i["path"] for i in cert["items"]] == [
        "cert_chain.crt",
        "server/agg_hub.example.crt",
        "server/agg_hub.example.key",
    ]
    for work in hub.of_kind("ManifestWork"):
        cluster = work["metadata"]["namespace"]
        _, plan, deployment = work["spec"]["workload"]["manifests"]
        assert plan["data"]["plan.yaml"] == aggregator_plan["plan.yaml"]
        assert plan["data"]["cols.yaml"] == aggregator_plan["cols.yaml"]
        assert plan["data"]["data.yaml"] == f"{collaborator_user(cluster)},/data/digits/{cluster}\n"  # its own only
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][-4:] == ["collaborator", "start", "-n", collaborator_user(cluster)]
        sources = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "cert")
        secret = sources["projected"]["sources"][1]["secret"]
        assert secret["name"] == CLIENT_CERT_SECRET  # the add-on registration certificate, presented as is
        assert [i["path"] for i in secret["items"]] == [
            f"client/col_{collaborator_user(cluster)}.crt",
            f"client/col_{collaborator_user(cluster)}.key",
        ]


def test_an_openfl_job_goes_running_to_completed_without_registering_keys() -> None:
    hub = _openfl_hub()
    hub.set_status("Deployment", "fl-digits", "digits-aggregator", {"availableReplicas": 1, "replicas": 1})
    _collaborators_available(hub, CLUSTERS)
    plan = hub.reconcile()
    assert plan.status.phase is Phase.RUNNING and plan.submit is not None
    plan = hub.reconcile(events=(Completed({"accuracy": 0.9}),))
    assert plan.status.phase is Phase.COMPLETED
    assert not hub.of_kind("ManifestWork")


def test_a_cluster_placed_later_changes_the_openfl_plan_and_so_replaces_the_aggregator() -> None:
    hub = Hub(resource(job(framework=Framework.OPENFL)))
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS[:2])]
    hub.reconcile(issued_tls=TLS)
    before = hub.of_kind("Deployment")[0]["spec"]["template"]["metadata"]["annotations"]["fleet.dev/plan"]
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    hub.reconcile()
    after = hub.of_kind("Deployment")[0]["spec"]["template"]["metadata"]["annotations"]["fleet.dev/plan"]
    assert before != after  # OpenFL reads cols.yaml once, at start
    _every_plan_is_the_aggregator_s(hub)


def test_an_openfl_plan_lists_only_collaborators_the_hub_vouches_for_and_follows_a_listener_address() -> None:
    hub = Hub(
        resource(
            job(
                framework=Framework.OPENFL, listeners=(Listener(name="lb", type=ListenerType.LOAD_BALANCER, port=9443),)
            )
        )
    )
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    keys = {c: c[-1] * 64 for c in CLUSTERS[:2]}  # eu-central-c's registration is not known yet
    hub.reconcile(issued_tls=TLS, client_keys=keys)
    plan = hub.owned[ObjectKey("ConfigMap", "fl-digits", "digits-aggregator-plan")]["data"]
    # A round waits for every listed collaborator: one that cannot sign in would hold each round to its timeout.
    assert yaml.safe_load(plan["cols.yaml"]) == {"collaborators": sorted(collaborator_user(c) for c in CLUSTERS[:2])}
    network = yaml.safe_load(plan["plan.yaml"])["network"]["settings"]
    assert (network["agg_addr"], network["agg_port"]) == ("digits-aggregator.fl-digits.svc", 9092)  # no address yet
    _every_plan_is_the_aggregator_s(hub)
    hub.set_status("Service", "fl-digits", "digits-listener-lb", {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})
    hub.reconcile(client_keys=keys, issued_tls=TLS)
    plan = hub.owned[ObjectKey("ConfigMap", "fl-digits", "digits-aggregator-plan")]["data"]
    network = yaml.safe_load(plan["plan.yaml"])["network"]["settings"]
    assert (network["agg_addr"], network["agg_port"]) == ("203.0.113.7", 9443)
    pod = hub.of_kind("Deployment")[0]["spec"]["template"]["spec"]
    cert = next(v for v in pod["volumes"] if v["name"] == "cert")["projected"]["sources"][0]["secret"]
    assert "server/agg_203.0.113.7.crt" in [i["path"] for i in cert["items"]]
    assert (
        "203.0.113.7"
        in hub.owned[ObjectKey("Secret", "fl-digits", "digits-aggregator-tls")]["metadata"]["annotations"][
            "fleet.dev/server-names"
        ]
    )
    _every_plan_is_the_aggregator_s(hub)


def test_an_openfl_aggregator_behind_a_route_may_bind_its_port_as_non_root() -> None:
    route = Listener(name="route", type=ListenerType.ROUTE, port=443, host="digits.apps.hub.example")
    hub = Hub(resource(job(framework=Framework.OPENFL, listeners=(route,))))
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    hub.reconcile(issued_tls=TLS)
    pod = hub.of_kind("Deployment")[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["ports"][0]["containerPort"] == 443
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["sysctls"] == [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "443"}]


def _every_plan_is_the_aggregator_s(hub: Hub) -> None:
    """OpenFL hashes the whole plan into the federation's id: every collaborator's must be the aggregator's."""
    aggregator = hub.owned[ObjectKey("ConfigMap", "fl-digits", "digits-aggregator-plan")]["data"]
    works = hub.of_kind("ManifestWork")
    assert works
    for work in works:
        plan = work["spec"]["workload"]["manifests"][1]["data"]
        assert (plan["plan.yaml"], plan["cols.yaml"]) == (aggregator["plan.yaml"], aggregator["cols.yaml"])


def test_load_balancer_address_comes_from_the_service_status() -> None:
    hub = Hub()
    hub.reconcile(issued_tls=TLS)
    hub.set_status("Service", "fl-digits", "digits-listener-lb", {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})
    hub.reconcile()
    addresses = {lst["name"]: lst["address"] for lst in hub.fl["status"]["listeners"]}
    assert addresses == {
        "server": "hub.example:30093",
        "lb": "203.0.113.7:9443",
        "route": "digits.apps.hub.example:443",
        "web": "digits.hub.example:443",
    }


@pytest.mark.parametrize("framework", list(Framework))
def test_every_object_validates_against_the_upstream_crds_and_kubernetes(crds_dir: Path, framework: Framework) -> None:
    from fleet.crd import federated_learning_crd_spec

    hub = Hub(resource(job(framework=framework)))
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    hub.reconcile(issued_tls=TLS)
    hub.set_status("Deployment", "fl-digits", f"digits-{runtime_for(framework).aggregator}", {"availableReplicas": 1})
    _collaborators_available(hub, CLUSTERS)
    hub.reconcile(events=(RoundFinished(1, ("eu-west-a",), {"loss": 0.1}, None),))
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "federatedlearnings.federation.fleet.dev"},
        "spec": federated_learning_crd_spec(),
    }
    documents: list[tuple[str, dict[str, Any]]] = [("crd", crd), ("fl", hub.fl)]
    for key, obj in hub.owned.items():
        obj = {k: v for k, v in obj.items() if k != "status"}
        documents.append((f"{key.kind}/{key.name}", obj))
        if key.kind == "ManifestWork":
            documents += [(f"{key.name}/manifest", m) for m in obj["spec"]["workload"]["manifests"]]
    report = validate_documents(documents, crds_dir, kubeconform=False)
    assert report.ok, "\n".join(report.lines())
    checked = {r.kind for r in report.resources if r.status is Status.VALID}
    assert {
        "ManifestWork",
        "Deployment",
        "Service",
        "Secret",
        "Ingress",
        "FederatedLearning",
        "ConfigMap",
    } <= checked


def test_job_ref_names_stay_valid_for_long_names() -> None:
    from fleet.controller.objects import aggregator_name, collaborator_name, listener_name
    from fleet.models import Listener, ListenerType

    ref = JobRef("j" * 63, "n" * 63, "uid")
    listener = Listener(name="l" * 63, type=ListenerType.NODE_PORT, port=30000)
    for name in (aggregator_name(ref), collaborator_name(ref), listener_name(ref, listener)):
        assert len(name) <= 63 and not name.endswith("-")
    assert collaborator_name(ref) != collaborator_name(JobRef("j" * 63, "n" * 62 + "m", "uid"))


def _allowed(hub: Hub) -> dict[str, Any]:
    (clients,) = hub.of_kind("ConfigMap")
    return dict(json.loads(clients["data"]["allowed-clients.json"]))


def test_the_allow_list_names_the_operators_and_the_placed_clusters_subjects() -> None:
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    # The hub reports eu-west-b's subject (its ManagedClusterAddOn); the others get OCM's default.
    plan = hub.reconcile(issued_tls=TLS, collaborator_users={"eu-west-b": "reported-user-b"})
    assert plan.collaborators == tuple(CLUSTERS)
    assert _allowed(hub) == {
        "operators": ["fleet:operator", "fleet:operator:serverapp:fl-digits:digits"],
        "collaborators": {
            collaborator_user("eu-central-c"): "eu-central-c",
            collaborator_user("eu-west-a"): "eu-west-a",
            "reported-user-b": "eu-west-b",
        },
    }
    # A cluster the Placement drops leaves the allow-list with its collaborator, in the same plan.
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS[:2])]
    plan = hub.reconcile(collaborator_users={"eu-west-b": "reported-user-b"})
    assert plan.collaborators == tuple(CLUSTERS[:2])
    assert collaborator_user("eu-central-c") not in _allowed(hub)["collaborators"]
    assert ObjectKey("ManifestWork", "eu-central-c", "fl-fl-digits-digits") in plan.delete


def _superlink_pod(hub: Hub) -> dict[str, Any]:
    (deployment,) = hub.of_kind("Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_the_superlink_starts_through_the_launcher_and_its_serverapp_presents_the_job_s_certificate() -> None:
    hub = Hub()
    hub.reconcile(issued_tls=TLS)
    pod = _superlink_pod(hub)
    containers = {c["name"]: c for c in pod["containers"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    superlink, executor = containers["superlink"], containers["executor"]
    assert superlink["command"] == ["python", "-m", "fleet.federation.flower_launcher", "superlink"]
    assert "--isolation=process" in superlink["args"]  # no SuperExec: Flower's could present no certificate
    env = {e["name"]: e["value"] for e in superlink["env"]}
    mounts = {m["mountPath"]: m["name"] for m in superlink["volumeMounts"]}
    assert env[CLIENT_CA] == "/var/run/fleet/tls/ca.crt" and mounts["/var/run/fleet/tls"] == "tls"
    assert env[ALLOWED_CLIENTS] == "/var/run/fleet/clients/allowed-clients.json"
    assert volumes[mounts["/var/run/fleet/clients"]] == {"name": "clients", "configMap": {"name": "digits-clients"}}
    # The executor forks Flower's ServerApp from a process presenting the job's ServerApp certificate, and dials
    # the SuperLink at 127.0.0.1, a name its server certificate carries.
    assert executor["command"] == ["python", "-m", "fleet.federation.executor"]
    assert executor["args"] == [
        "--serve=flwr-serverapp=127.0.0.1:9092",
        "--root-certificates=/var/run/fleet/serverapp/ca.crt",
    ]
    executor_env = {e["name"]: e["value"] for e in executor["env"]}
    assert executor_env[CLIENT_CERT] == "/var/run/fleet/serverapp/tls.crt"
    assert "127.0.0.1" in server_hosts(
        FederatedLearningSpec.model_validate(hub.fl["spec"]), JobRef("digits", "fl-digits", "")
    )
    # Each container holds only its own key.
    keys = {name: {i["key"] for i in volumes[name]["secret"]["items"]} for name in ("tls", "serverapp")}
    assert keys == {"tls": {"ca.crt", "tls.crt", "tls.key"}, "serverapp": {"ca.crt", "serverapp.crt", "serverapp.key"}}
    model = next(m for m in executor["volumeMounts"] if m["name"] == "model")
    assert model["mountPath"] == "/models/digits" and not model.get("readOnly")  # the ServerApp writes the model


def _supernode(work: dict[str, Any]) -> dict[str, Any]:
    deployment: dict[str, Any] = work["spec"]["workload"]["manifests"][1]
    return deployment


def test_a_collaborator_presents_its_registration_certificate_and_signs_with_the_registered_key() -> None:
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS[:2])]
    hub.reconcile(issued_tls=TLS, client_keys={"eu-west-a": "a" * 64})
    works = {w["metadata"]["namespace"]: w for w in hub.of_kind("ManifestWork")}
    deployment = _supernode(works["eu-west-a"])
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["command"] == ["python", "-m", "fleet.federation.flower_launcher", "supernode"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert env[CLIENT_CERT].rpartition("/")[0] == "/var/run/fleet/client"
    assert volumes[mounts["/var/run/fleet/client"]]["secret"]["secretName"] == CLIENT_CERT_SECRET
    assert template["metadata"]["annotations"]["fleet.dev/client-key"] == "a" * 64
    (init,) = template["spec"]["initContainers"]
    assert init["command"][-1] == "a" * 64  # the init step refuses any other key
    # A cluster whose certificate the hub has not seen yet starts without the check; its key comes later.
    assert "annotations" not in _supernode(works["eu-west-b"])["spec"]["template"]["metadata"]


def test_a_renewed_key_replaces_only_that_cluster_s_collaborator() -> None:
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS)]
    keys = {c: c[0] * 64 for c in CLUSTERS}
    hub.reconcile(issued_tls=TLS, client_keys=keys)
    plan = hub.reconcile(client_keys={**keys, "eu-west-b": "f" * 64})
    assert [key_of(o) for o in plan.apply] == [ObjectKey("ManifestWork", "eu-west-b", "fl-fl-digits-digits")]
    template = _supernode(plan.apply[0])["spec"]["template"]
    assert template["metadata"]["annotations"]["fleet.dev/client-key"] == "f" * 64
    assert _supernode(plan.apply[0])["spec"]["strategy"] == {"type": "Recreate"}  # never two SuperNodes at once


def test_a_job_without_tls_runs_flower_as_is() -> None:
    hub = Hub(resource(job(tls=False)))
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS[:2])]
    hub.reconcile()
    assert not hub.of_kind("ConfigMap") and not hub.of_kind("Secret")
    containers = {c["name"]: c for c in _superlink_pod(hub)["containers"]}
    assert (
        containers["superlink"]["command"] == ["flower-superlink"] and "--insecure" in containers["superlink"]["args"]
    )
    assert containers["executor"]["args"] == ["--serve=flwr-serverapp=127.0.0.1:9092"]
    (container,) = _supernode(hub.of_kind("ManifestWork")[0])["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["flower-supernode"] and "--insecure" in container["args"]


def test_a_collaborator_without_a_known_identity_is_not_available() -> None:
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", CLUSTERS[:2])]
    only_a = {"eu-west-a": "a" * 64}  # eu-west-b's certificate not seen
    hub.reconcile(issued_tls=TLS, client_keys=only_a)
    _ready_federation(hub)
    _collaborators_available(hub, CLUSTERS[:2])  # its pod runs: its SuperNode cannot sign in
    plan = hub.reconcile(client_keys=only_a)
    assert plan.submit is None and plan.status.phase is Phase.WAITING
    assert "waiting for eu-west-b" in plan.status.message
    # Its certificate seen: it counts, and its collaborator is replaced to sign with that key.
    plan = hub.reconcile(client_keys={**only_a, "eu-west-b": "b" * 64})
    assert plan.submit is not None and plan.status.phase is Phase.RUNNING
    assert [key_of(o) for o in plan.apply] == [ObjectKey("ManifestWork", "eu-west-b", "fl-fl-digits-digits")]
    # Without TLS no identity is needed.
    plain = Hub(resource(job(tls=False)))
    plain.decisions = [placement_decision("fl-digits", "digits", CLUSTERS[:2])]
    plain.reconcile()
    _ready_federation(plain)
    _collaborators_available(plain, CLUSTERS[:2])
    plan = plain.reconcile(client_keys={})
    assert plan.submit is not None, plan.status.message


def _lb_service(hub: Hub) -> ObjectKey:
    return ObjectKey("Service", "fl-digits", "digits-listener-lb")


def _template_certificate(hub: Hub) -> str:
    (deployment,) = hub.of_kind("Deployment")
    return str(deployment["spec"]["template"]["metadata"]["annotations"]["fleet.dev/server-certificate"])


def test_a_load_balancer_address_that_appears_gets_the_certificate_issued_again_and_the_superlink_replaced() -> None:
    hub = Hub()
    hub.reconcile(issued_tls=TLS)
    assert not hub.reconcile().needs_tls
    before = _template_certificate(hub)
    # The cloud's load balancer gets its address after the Service exists.
    hub.set_status("Service", "fl-digits", "digits-listener-lb", {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})
    plan = hub.reconcile()
    assert plan.needs_tls and "203.0.113.7" in plan.server_hosts
    assert not plan.delete and hub.of_kind("Deployment")  # the old certificate serves until the new one is there
    renewed = replace(TLS, certificate="RENEWED CERT PEM\n")
    plan = hub.reconcile(issued_tls=renewed)
    secret = next(o for o in plan.apply if o["kind"] == "Secret")
    assert "203.0.113.7" in secret["metadata"]["annotations"]["fleet.dev/server-names"].split(",")
    assert base64.b64decode(secret["data"]["tls.crt"]).decode() == renewed.certificate
    # Flower reads its certificate once: the SuperLink's pod is replaced to serve the new one.
    assert any(o["kind"] == "Deployment" for o in plan.apply) and _template_certificate(hub) != before
    assert not hub.reconcile().needs_tls


def test_a_node_host_that_moves_gets_the_certificate_issued_again_without_the_old_name() -> None:
    hub = Hub()
    hub.reconcile(issued_tls=TLS)
    plan = hub.reconcile(settings=Settings(node_host="10.0.0.9"))
    assert plan.needs_tls
    assert "10.0.0.9" in plan.server_hosts and "hub.example" not in plan.server_hosts
    assert plan.status.listeners[0].address == "10.0.0.9:30093"


def test_a_load_balancer_listener_may_declare_its_host() -> None:
    import pytest
    from pydantic import ValidationError

    from fleet.models import Listener, ListenerType

    listener = Listener(name="lb", type=ListenerType.LOAD_BALANCER, port=9443, host="fl.hub.example")
    hub = Hub(resource(job(listeners=(listener,))))
    plan = hub.reconcile(issued_tls=TLS)
    assert plan.status.listeners[0].address == "fl.hub.example:9443"  # known at once, whatever address it gets
    assert "fl.hub.example" in plan.server_hosts
    service = next(o for o in hub.of_kind("Service") if o["metadata"]["name"] == "digits-listener-lb")
    assert service["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"] == "fl.hub.example"
    with pytest.raises(ValidationError, match="not NodePort"):
        Listener(name="np", type=ListenerType.NODE_PORT, port=30093, host="fl.hub.example")


def test_an_ingress_listener_names_its_class_and_passes_tls_through() -> None:
    # Rules (kubernetes/ingress-nginx): docs/user-guide/tls.md, "The flag --enable-ssl-passthrough enables SSL
    # passthrough feature. By default this feature is disabled" (without it the ssl-passthrough annotation is
    # ignored and nginx terminates TLS, so the SuperLink would never see a collaborator's certificate);
    # charts/ingress-nginx/values.yaml names its IngressClass `nginx` (controller.ingressClassResource.name).
    hub = Hub()
    hub.reconcile(issued_tls=TLS)
    (ingress,) = hub.of_kind("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-passthrough"] == "true"


def test_a_secret_from_before_the_names_were_recorded_is_read_from_its_certificate(tmp_path: Path) -> None:
    # An upgraded controller finds the SuperLink's Secret without the names annotation: it reads them from the
    # certificate, and a certificate naming every address is not issued again (the running SuperLink stays).
    from fleet.controller.hub import HubCA
    from fleet.federation.certificates import CertificateAuthority

    hub = Hub()
    plan = hub.reconcile()
    authority = CertificateAuthority.create(tmp_path, "test hub CA")
    ca = HubCA(authority.path.read_text(), (tmp_path / "ca.key").read_text())
    hub.reconcile(issued_tls=ca.issue_federation("digits-superlink", plan.server_hosts, "serverapp"))
    key = next(k for k in hub.owned if k.kind == "Secret")
    del hub.owned[key]["metadata"]["annotations"]["fleet.dev/server-names"]
    assert not hub.reconcile().needs_tls
    hub.set_status("Service", "fl-digits", "digits-listener-lb", {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})
    assert hub.reconcile().needs_tls  # a name it lacks: issued again
