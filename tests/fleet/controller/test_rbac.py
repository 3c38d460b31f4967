"""The rendered RBAC suffices: every request the running controller (kopf and the official client) makes to the
mock hub is one that the rendered ClusterRole, or the rendered Role of the request's namespace, allows, decided
as Kubernetes' RBAC authorizer decides it. The renderer's own tests pin the rules; these show they are enough.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from fleet.hub import CONTROLLER_NAME, CONTROLLER_NAMESPACE
from fleet.repository import Repository, load_repository

from .conftest import registration_csr, sign_registration
from .operator_support import (
    CLUSTERS,
    FL,
    JOB,
    ApiServer,
    Hub,
    Operator,
    RecordedRuns,
    collection,
    eventually,
    make_ready,
    phase,
    start_job,
)

on_the_mock_hub = pytest.mark.kmock(cls=ApiServer)

_VERBS = {kmock.method.POST: "create", kmock.method.PUT: "update", kmock.method.PATCH: "patch"}
_CONTROLLER_AGENTS = ("kopf/", "OpenAPI-Generator/")
"""The User-Agents of kopf and of the official client (`fleet.controller.hub`); the test's own are aiohttp's."""


@dataclass(frozen=True)
class Access:
    """One request as the RBAC authorizer sees it."""

    verb: str
    group: str
    resource: str
    """The plural, with ``/<subresource>`` for a subresource."""
    namespace: str | None
    name: str | None
    path: str


@dataclass(frozen=True)
class Permissions:
    cluster: tuple[dict[str, Any], ...]
    namespaced: dict[str, tuple[dict[str, Any], ...]]

    def allows(self, access: Access) -> bool:
        rules: Iterable[dict[str, Any]] = self.cluster
        if access.namespace is not None:
            rules = [*self.cluster, *self.namespaced.get(access.namespace, ())]
        return any(_matches(rule, access) for rule in rules)


def _matches(rule: dict[str, Any], access: Access) -> bool:
    names = rule.get("resourceNames")
    return (
        access.group in rule["apiGroups"]
        and access.resource in rule["resources"]
        and access.verb in rule["verbs"]
        and (not names or access.name in names)
    )


def _access(request: kmock.Request) -> Access | None:
    """The RBAC attributes of a request; None for discovery (``/api``, ``/apis/<group>/<version>``, ``/version``),
    which every authenticated client may read."""
    parts = [p for p in request.url.path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"]:
        group, rest = (parts[1] if len(parts) > 1 else ""), parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
    if len(rest) > 2:
        resource += f"/{rest[2]}"
    if request.method == kmock.method.GET:
        verb = "get" if name else ("watch" if request.params.get("watch") in ("true", "1") else "list")
    elif request.method == kmock.method.DELETE:
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERBS[request.method]
    return Access(verb, group, resource, namespace, name, request.url.path)


def _controller_accesses(hub: Hub) -> list[Access]:
    found = []
    for request in hub.server:
        agent = request.headers.get("User-Agent", "")
        if agent.startswith(_CONTROLLER_AGENTS):
            access = _access(request)
            if access is not None:
                found.append(access)
    return found


def _repository(root: Path) -> Repository:
    """The operator tests' hub as a repository: job ``digits`` in ``fl-digits``, its three clusters."""
    job = {
        "name": JOB.name,
        "namespace": JOB.namespace,
        "images": {"server": "ghcr.io/fleet-fl/fleet-app:0.1.0", "client": "ghcr.io/fleet-fl/fleet-app:0.1.0"},
        "rounds": 3,
        "minAvailableClients": 2,
        "maxClients": 3,
        "dataset": "digits",
        "storage": {"pvc": {"name": "digits-model", "size": "1Gi", "path": "/models/digits"}},
        "listeners": [{"name": "server", "type": "NodePort", "port": 30093}],
        "clusterSets": ["eu"],
    }
    (root / "jobs").mkdir(parents=True)
    (root / "jobs" / f"{JOB.name}.yaml").write_text(yaml.safe_dump(job))
    (root / "clusters").mkdir()
    for cluster in CLUSTERS:
        definition = {
            "name": cluster,
            "clusterSet": "eu",
            "datasets": {"digits": {"path": f"/data/digits/{cluster}", "samples": 100}},
            "capacity": {"cpu": "8", "memory": "32Gi"},
        }
        (root / "clusters" / f"{cluster}.yaml").write_text(yaml.safe_dump(definition))
    return load_repository(root)


def _rendered_permissions(root: Path) -> Permissions:
    import render

    bodies = [m.body for m in render.synth(_repository(root), "hub")]
    account = [{"kind": "ServiceAccount", "name": CONTROLLER_NAME, "namespace": CONTROLLER_NAMESPACE}]
    cluster_roles = {b["metadata"]["name"]: b for b in bodies if b["kind"] == "ClusterRole"}
    roles = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in bodies if b["kind"] == "Role"}
    cluster: list[dict[str, Any]] = []
    namespaced: dict[str, list[dict[str, Any]]] = {}
    # Only what is bound to the controller's account counts.
    for binding in bodies:
        if binding.get("subjects") != account:
            continue
        reference = binding["roleRef"]["name"]
        if binding["kind"] == "ClusterRoleBinding":
            cluster += cluster_roles[reference]["rules"]
        elif binding["kind"] == "RoleBinding":
            namespace = binding["metadata"]["namespace"]
            namespaced.setdefault(namespace, []).extend(roles[(namespace, reference)]["rules"])
    assert sorted(namespaced) == sorted([CONTROLLER_NAMESPACE, JOB.namespace, *CLUSTERS])
    return Permissions(tuple(cluster), {ns: tuple(rules) for ns, rules in namespaced.items()})


@pytest.mark.asyncio
@on_the_mock_hub
async def test_every_request_from_start_to_deletion_is_allowed_by_the_rendered_roles(hub: Hub, tmp_path: Path) -> None:
    permissions = _rendered_permissions(tmp_path / "repo")
    runs = RecordedRuns()
    async with Operator(hub, runs):
        await eventually(lambda: any(s["metadata"]["name"] == "fleet-hub-ca" for s in hub.objects("v1/secrets")))
        ca = next(s for s in hub.objects("v1/secrets") if s["metadata"]["name"] == "fleet-hub-ca")["data"]
        pems = (base64.b64decode(ca["tls.crt"]).decode(), base64.b64decode(ca["tls.key"]).decode())
        csrs = "certificates.k8s.io/v1/certificatesigningrequests"
        first = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        for cluster in CLUSTERS:
            await hub.create(csrs, None, registration_csr(sign_registration(*pems, cluster)[0], cluster, created=first))
        await start_job(hub, identities=False)
        await make_ready(hub, CLUSTERS)
        await eventually(lambda: phase(hub) == "Running", what="Running")
        await eventually(lambda: len(runs.registered) == 3, what="the keys registered")
        # A renewal replaces a record and a collaborator.
        await hub.create(csrs, None, registration_csr(sign_registration(*pems, CLUSTERS[0])[0], CLUSTERS[0]))
        await eventually(lambda: len(runs.unregistered) == 1, what="the renewed key registered")
        hub.progress({"event": "round", "round": 1, "participants": CLUSTERS, "metrics": {}, "time": None})
        hub.progress({"event": "completed", "metrics": {"accuracy": 0.9}})
        await eventually(lambda: phase(hub) == "Completed", what="Completed")
        await eventually(lambda: not hub.objects("work.open-cluster-management.io/v1/manifestworks"), what="no works")
        await hub.request("DELETE", collection(FL, JOB.namespace) + f"/{JOB.name}")
        await eventually(lambda: not hub.job(), what="the job gone")

    accesses = _controller_accesses(hub)
    denied = sorted({f"{a.verb} {a.path}" for a in accesses if not permissions.allows(a)})
    assert denied == [], "refused by the rendered RBAC:\n" + "\n".join(denied)
    # The run went through every kind of call the controller makes, so the check above covers them all.
    seen = {(a.verb, a.resource, a.namespace) for a in accesses}
    expected = {
        ("get", "secrets", CONTROLLER_NAMESPACE),
        ("create", "secrets", CONTROLLER_NAMESPACE),
        ("create", "configmaps", CONTROLLER_NAMESPACE),  # the identity records
        ("patch", "configmaps", CONTROLLER_NAMESPACE),  # renewed
        ("patch", "manifestworks", CLUSTERS[0]),  # the renewed collaborator
        ("watch", "configmaps", None),
        ("watch", "managedclusteraddons", None),
        ("create", "events", JOB.namespace),
        ("patch", "federatedlearnings", JOB.namespace),
        ("patch", "federatedlearnings/status", JOB.namespace),
        ("patch", "deployments", JOB.namespace),  # scaled down at completion: created before, so merged
        ("list", "manifestworks", None),  # the finalizer's own look across the cluster namespaces
        ("watch", "federatedlearnings", None),
        ("watch", "secrets", None),
        ("watch", "certificatesigningrequests", None),
        ("watch", "managedclusters", None),
        ("watch", "placementdecisions", None),
        ("watch", "customresourcedefinitions", None),
    }
    for resource in (
        "secrets",
        "configmaps",
        "services",
        "persistentvolumeclaims",
        "deployments",
        "routes",
        "ingresses",
    ):
        expected |= {("create", resource, JOB.namespace), ("delete", resource, JOB.namespace)}
    for cluster in CLUSTERS:
        expected |= {("create", "manifestworks", cluster), ("delete", "manifestworks", cluster)}
    assert expected <= seen, sorted(expected - seen)


def test_the_authorizer_here_refuses_what_the_roles_do_not_grant(tmp_path: Path) -> None:
    permissions = _rendered_permissions(tmp_path / "repo")

    def allowed(verb: str, group: str, resource: str, namespace: str | None, name: str | None = None) -> bool:
        return permissions.allows(Access(verb, group, resource, namespace, name, ""))

    assert allowed("create", "", "secrets", JOB.namespace)
    assert not allowed("create", "", "secrets", "kube-system")  # no Role there
    assert not allowed("create", "", "secrets", None)  # nor cluster-wide
    assert not allowed("get", "", "secrets", CONTROLLER_NAMESPACE, "another-secret")  # by name only
    assert allowed("get", "", "secrets", CONTROLLER_NAMESPACE, "fleet-hub-ca")
    assert not allowed("patch", "", "secrets", CONTROLLER_NAMESPACE, "fleet-hub-ca")  # only the operator's own
    assert allowed("patch", "", "configmaps", CONTROLLER_NAMESPACE, "fleet-identity-eu-west-a")
    assert not allowed("patch", "", "configmaps", CONTROLLER_NAMESPACE, "kube-root-ca.crt")
    assert not allowed("create", "work.open-cluster-management.io", "manifestworks", JOB.namespace)
    assert allowed("create", "work.open-cluster-management.io", "manifestworks", CLUSTERS[0])
    assert not allowed("update", "federation.fleet.dev", "federatedlearnings", JOB.namespace)


async def _delete_with_the_secret_forbidden(hub: Hub) -> None:
    """Run the job, then delete it while every deletion of its TLS Secret is refused with 403."""
    hub.server["delete", f"/api/v1/namespaces/{JOB.namespace}/secrets/{JOB.name}-superlink-tls"] << 403
    await start_job(hub)
    await make_ready(hub, CLUSTERS)
    await eventually(lambda: phase(hub) == "Running", what="Running")
    await hub.request("DELETE", collection(FL, JOB.namespace) + f"/{JOB.name}")


@pytest.mark.asyncio
@on_the_mock_hub
async def test_a_namespace_being_deleted_lets_the_finalizer_finish_without_its_role(hub: Hub, tmp_path: Path) -> None:
    permissions = _rendered_permissions(tmp_path / "repo")
    # No Namespace fl-digits on the hub: gone, with its RoleBinding, as in the middle of its deletion.
    async with Operator(hub, RecordedRuns()):
        await _delete_with_the_secret_forbidden(hub)
        await eventually(lambda: not hub.job(), what="the job gone")
    accesses = _controller_accesses(hub)
    secret = f"{JOB.name}-superlink-tls"
    assert any(a.verb == "delete" and a.resource == "secrets" and a.name == secret for a in accesses)
    lookup = Access("get", "", "namespaces", None, JOB.namespace, f"/api/v1/namespaces/{JOB.namespace}")
    assert lookup in accesses
    assert all(permissions.allows(a) for a in accesses)  # the lookup too
    assert not hub.objects("work.open-cluster-management.io/v1/manifestworks")


@pytest.mark.asyncio
@on_the_mock_hub
async def test_a_missing_role_in_a_living_namespace_holds_the_finalizer(hub: Hub) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": JOB.namespace}}
    hub.server["get", f"/api/v1/namespaces/{JOB.namespace}"] << namespace
    async with Operator(hub, RecordedRuns()) as operator:
        await _delete_with_the_secret_forbidden(hub)
        errors = operator.controller.metrics.reconcile_errors.labels("delete")
        await eventually(lambda: errors._value.get() >= 1, what="the refused deletion")
        await asyncio.sleep(0.5)
        assert hub.job(), "the finalizer let the job go with its Secret left behind"
