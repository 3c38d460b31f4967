"""The upstream rules the controller depends on, each stated with its source so the next reader can re-check it,
and the controller's objects checked against them."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any

from fleet.controller.hub import HubCA
from fleet.controller.objects import JobRef, collaborator_work, server_hosts
from fleet.controller.observe import collaborator_state, selected_clusters
from fleet.federation.certificates import CertificateAuthority
from fleet.models import FederatedLearningSpec

from .conftest import collaborator_deployment_name, placement_decision, resource
from .test_reconcile import TLS, Hub
from .work_agent import collaborator_status, deadline_exceeded, feedback_value, served_deployment

JOB = JobRef("digits", "fl-digits", "uid-1")


def _spec() -> FederatedLearningSpec:
    return FederatedLearningSpec.model_validate(resource()["spec"])


def _work() -> dict[str, Any]:
    return collaborator_work(_spec(), JOB, "eu-west-a", "/data/digits", "hub.example:30093", "CA PEM\n", "a" * 64)


# --- OCM's work agent: status feedback ----------------------------------------------------------------------


def test_every_feedback_path_finds_its_value_in_a_deployment_as_the_api_server_returns_it() -> None:
    # Rule (ocm pkg/work/spoke/statusfeedback/reader.go): a JSONPath is evaluated from the object's root; one
    # that matches nothing reports no value and no error. A path written from `.status` down is the only kind
    # that can match.
    work = _work()
    deployment = next(m for m in work["spec"]["workload"]["manifests"] if m["kind"] == "Deployment")
    served = served_deployment(deployment, available=0, progressing=deadline_exceeded("x"))
    (config,) = work["spec"]["manifestConfigs"]
    paths = [p for rule in config["feedbackRules"] for p in rule.get("jsonPaths", [])]
    assert paths
    for path in paths:
        assert feedback_value(served, path["name"], path["path"]) is not None, path
    # What the old paths, written from `.conditions`, got from the same object: nothing.
    assert feedback_value(served, "old", '.conditions[?(@.type=="Progressing")].reason') is None


def test_a_collaborator_past_its_progress_deadline_is_reported_from_the_work_agent_s_feedback() -> None:
    # Rule (kubernetes pkg/controller/deployment/progress.go, as served in apps/v1 DeploymentStatus): a Deployment
    # whose Pods do not become available within progressDeadlineSeconds gets Progressing=False, reason
    # ProgressDeadlineExceeded, with a message naming its ReplicaSet; the Pod's own waiting reason (ErrImagePull)
    # is on the Pod, which a ManifestWork does not carry, so its feedback cannot reach it.
    work = _work()
    status = collaborator_status(work, 0, deadline_exceeded(collaborator_deployment_name()))
    available, problem = collaborator_state({**work, "status": status})
    assert not available and problem is not None
    assert problem.reason == "CollaboratorNotStarting"
    assert "ProgressDeadlineExceeded" in problem.message and "image" in problem.message
    # Healthy: available, no problem.
    assert collaborator_state({**work, "status": collaborator_status(work, 1)}) == (True, None)


def test_the_work_agent_reports_the_collaborator_s_available_replicas_so_the_job_runs() -> None:
    hub = Hub()
    hub.decisions = [placement_decision("fl-digits", "digits", ["eu-west-a", "eu-west-b"])]
    hub.reconcile(issued_tls=TLS)
    for key, work in list(hub.owned.items()):
        if key.kind == "ManifestWork":
            hub.set_status("ManifestWork", key.namespace, key.name, collaborator_status(work, 1))
    superlink = next(o for o in hub.of_kind("Deployment"))
    hub.owned[next(k for k in hub.owned if k.kind == "Deployment")] = served_deployment(superlink, available=1)
    plan = hub.reconcile()
    assert plan.submit is not None, plan.status.message


# --- OCM's placement: PlacementDecision pages ---------------------------------------------------------------


def test_placement_decisions_are_read_in_page_order_not_name_order() -> None:
    # Rule (open-cluster-management-io.github.io content/en/concepts/placement.md, and ocm
    # pkg/placement/controllers/scheduling/scheduling_controller.go): decisions are paged, at most 100 per
    # PlacementDecision, named `<placement>-decision-<n>` with the page index as the suffix, from 1.
    pages = [placement_decision("fl-digits", "digits", [f"c{page:02d}"], index=page) for page in (10, 2, 1, 11, 3)]
    assert selected_clusters(pages) == ("c01", "c02", "c03", "c10", "c11")


# --- Flower 1.41: where the SuperLink's ServerApp side dials it ---------------------------------------------


def test_the_superlink_certificate_is_valid_where_flower_dials_the_superlink_from_its_own_pod(tmp_path: Path) -> None:
    # Rule (flwr 1.41.0 supercore/address.py resolve_bind_address, used by superlink/cli/flower_superlink.py for
    # its executor): a SuperLink bound to 0.0.0.0:<port> is dialled at 127.0.0.1:<port>; supercore/protobuf/
    # client.py dials https://<address> with the root certificates, so the host name (an IP) is checked.
    from flwr.supercore.address import resolve_bind_address

    hub = Hub()
    hub.reconcile(issued_tls=TLS)
    (superlink_deployment,) = hub.of_kind("Deployment")
    containers = {c["name"]: c for c in superlink_deployment["spec"]["template"]["spec"]["containers"]}
    args = dict(a.removeprefix("--").split("=", 1) for a in containers["superlink"]["args"] if "=" in a)
    dialled = resolve_bind_address(f"{args['host']}:{args['port']}")
    (serve,) = [a for a in containers["executor"]["args"] if a.startswith("--serve=")]
    assert serve == f"--serve=flwr-serverapp={dialled}"  # fleet's executor dials where Flower's would
    host, _, port = dialled.rpartition(":")
    assert (host, port) == ("127.0.0.1", "9092")

    authority = CertificateAuthority.create(tmp_path, "test hub CA")
    ca = HubCA(authority.path.read_text(), (tmp_path / "ca.key").read_text())
    issued = ca.issue_federation("digits-superlink", server_hosts(_spec(), JOB), "serverapp")
    _handshake(issued.certificate, issued.key, issued.ca, host, tmp_path)


def _handshake(certificate: str, key: str, ca: str, host: str, folder: Path) -> None:
    """A real TLS handshake with the host name checked, as httpx's verifying context does."""
    (folder / "server.crt").write_text(certificate)
    (folder / "server.key").write_text(key)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(folder / "server.crt", folder / "server.key")
    listener = socket.create_server((host, 0))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True):
                pass
        except (OSError, ssl.SSLError) as error:
            errors.append(error)

    thread = threading.Thread(target=serve)
    thread.start()
    client = ssl.create_default_context(cadata=ca)
    try:
        address = (host, listener.getsockname()[1])
        with socket.create_connection(address, timeout=10) as raw, client.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() is not None
    finally:
        thread.join(timeout=10)
        listener.close()
    assert not errors, errors


# --- OCM's klusterlet: what a default work agent may apply ---------------------------------------------------

_WORK_AGENT_RULES = [
    # ocm manifests/klusterlet/managed/klusterlet-work-clusterrole-execution.yaml (the cluster-scoped kinds it
    # grants, besides those of other add-ons); -work:agent (klusterlet-work-clusterrole.yaml) grants only its own
    # appliedmanifestworks, SubjectAccessReviews and impersonation; `admin` (bound by
    # klusterlet-work-clusterrolebinding-execution-admin.yaml) aggregates namespaced kinds only.
    (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch", "create", "delete", "update"]),
    ([""], ["namespaces"], ["create", "update", "patch", "delete"]),
    (["rbac.authorization.k8s.io"], ["clusterrolebindings", "rolebindings"], ["get", "create", "update", "patch"]),
    (
        ["rbac.authorization.k8s.io"],
        ["clusterroles", "roles"],
        ["get", "list", "watch", "create", "update", "patch", "delete", "escalate", "bind"],
    ),
]
_AGGREGATE_LABEL = "open-cluster-management.io/aggregate-to-work"
"""ocm pkg/operator/operators/klusterlet/controllers/klusterletcontroller/managed_reconcile.go (createAggregationRule):
the klusterlet makes ClusterRole `open-cluster-management:<klusterlet>-work:aggregate`, bound to the work agent,
aggregating every ClusterRole labelled `open-cluster-management.io/aggregate-to-work: "true"`."""


def _allowed(rules: list[tuple[list[str], list[str], list[str]]], group: str, resource: str, verb: str) -> bool:
    return any(group in g and resource in r and verb in v for g, r, v in rules)


def _resource_of(manifest: dict[str, Any]) -> tuple[str, str]:
    group = manifest["apiVersion"].rpartition("/")[0]
    return group, manifest["kind"].lower() + "s"


def test_a_default_work_agent_may_apply_every_manifest_of_the_cluster_claims_work() -> None:
    # The agent applies a work's manifests in order (get, then create or update); a ClusterRole it creates with
    # the aggregate label adds its rules to the agent's (escalate: it may grant what it does not hold yet).
    import yaml

    root = Path(__file__).resolve().parents[3]
    works = sorted((root / "manifests" / "hub" / "clusters").glob("*/manifestwork-fleet-cluster-claims.yaml"))
    assert works
    for path in works:
        work = yaml.safe_load(path.read_text())
        rules = list(_WORK_AGENT_RULES)
        for manifest in work["spec"]["workload"]["manifests"]:
            group, plural = _resource_of(manifest)
            for verb in ("get", "create", "update"):
                assert _allowed(rules, group, plural, verb), f"{path.name}: the work agent may not {verb} {plural}"
            if manifest["kind"] == "ClusterRole":
                assert _allowed(rules, group, plural, "escalate")
                if (manifest["metadata"].get("labels") or {}).get(_AGGREGATE_LABEL) == "true":
                    rules += [(r["apiGroups"], r["resources"], r["verbs"]) for r in manifest["rules"]]
        assert any(m["kind"] == "ClusterClaim" for m in work["spec"]["workload"]["manifests"])
