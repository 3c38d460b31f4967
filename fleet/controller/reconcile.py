"""One reconcile of one job, as a pure function: the hub's state in; objects, status and events out.

`reconcile` observes the job's world from plain objects (its PlacementDecisions, the selected clusters'
ClusterClaims, the objects it owns and their status), runs the shared phase machine (`fleet.lifecycle.step`)
and turns its actions into the desired objects. The caller applies the difference: `Plan.apply` holds only
objects that are missing or differ from what the controller last wrote (by `objects.DESIRED_HASH`), and
`Plan.delete` only objects the job no longer wants, so a reconcile with nothing new costs no API request.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from fleet.federation.certificates import server_names
from fleet.federation.progress import Event
from fleet.hub import collaborator_user
from fleet.lifecycle import (
    DeployCollaborators,
    EmitEvent,
    EnsureFederation,
    Observation,
    Problem,
    ScaleDownFederation,
    StopRun,
    SubmitRun,
    rfc3339,
    step,
)
from fleet.models import Condition, FederatedLearningSpec, FederatedLearningStatus, Phase
from fleet.runtimes import framework_of, runtime_for

from . import observe
from .objects import (
    DEPLOYMENT,
    DESIRED_HASH,
    MANIFEST_WORK,
    RUN_ID_ANNOTATION,
    SECRET,
    SERVER_NAMES_ANNOTATION,
    SERVICE,
    JobRef,
    ObjectKey,
    TlsMaterial,
    aggregator_name,
    collaborator_work,
    federation_objects,
    key_of,
    model_path,
    server_hosts,
    tls_secret_name,
    work_name,
)


@dataclass(frozen=True)
class Settings:
    node_host: str = ""
    """The host name or address at which the hub's nodes are reached, for NodePort listeners."""


@dataclass(frozen=True)
class JobState:
    resource: Mapping[str, Any]
    """The FederatedLearning object: metadata, spec, status."""
    decisions: Sequence[Mapping[str, Any]]
    """The PlacementDecisions of the job's Placement."""
    claims: Mapping[str, Mapping[str, str]]
    """ClusterClaims (name -> value) of the managed clusters, by cluster."""
    owned: Mapping[ObjectKey, Mapping[str, Any]]
    """The objects that exist for this job (hub objects and ManifestWorks), by key."""
    ca_pem: str
    """The hub CA certificate (PEM)."""
    now: datetime.datetime
    events: tuple[Event, ...] = ()
    """Progress events of the run (all of them, or those since the last reconcile)."""
    run_failure: str | None = None
    issued_tls: TlsMaterial | None = None
    """A SuperLink certificate issued for this reconcile (after a plan asked for one)."""
    settings: Settings = field(default_factory=Settings)
    collaborator_users: Mapping[str, str] = field(default_factory=dict)
    """Cluster -> the user (certificate common name) of its add-on registration, where the hub reports it
    (`identity.expected_subject`); OCM's default subject otherwise."""
    client_keys: Mapping[str, str] = field(default_factory=dict)
    """Cluster -> the digest of its current registration key (`identity.key_digest`): what its collaborator must
    sign with."""


@dataclass(frozen=True)
class Plan:
    status: FederatedLearningStatus
    status_changed: bool
    apply: tuple[dict[str, Any], ...] = ()
    """Objects to create, or to replace where they exist with another desired hash."""
    delete: tuple[ObjectKey, ...] = ()
    events: tuple[EmitEvent, ...] = ()
    submit: SubmitRun | None = None
    stop_run: bool = False
    needs_tls: bool = False
    """The SuperLink needs a server certificate, and none exists or the one there does not name every address it is
    reached at: issue one for `server_hosts` and reconcile again."""
    server_hosts: tuple[str, ...] = ()
    """The names the SuperLink's certificate must be valid for, as the listeners' addresses stand now."""
    collaborators: tuple[str, ...] = ()
    """The clusters whose collaborator this plan keeps (their keys belong registered with the SuperLink)."""


def job_ref(resource: Mapping[str, Any]) -> JobRef:
    metadata = resource["metadata"]
    aggregator = runtime_for(framework_of(resource)).aggregator
    return JobRef(metadata["name"], metadata["namespace"], metadata.get("uid", ""), aggregator)


def run_id(resource: Mapping[str, Any]) -> int | None:
    value = ((resource.get("metadata") or {}).get("annotations") or {}).get(RUN_ID_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def current_status(resource: Mapping[str, Any]) -> FederatedLearningStatus:
    """The resource's status, or a fresh one when it has none (or one this version cannot read)."""
    try:
        return FederatedLearningStatus.model_validate(resource.get("status") or {})
    except ValidationError:
        return FederatedLearningStatus()


def reconcile(state: JobState) -> Plan:
    resource = state.resource
    job = job_ref(resource)
    status = current_status(resource)
    try:
        spec = FederatedLearningSpec.model_validate(resource.get("spec") or {})
    except ValidationError as error:
        return _invalid(status, state, error)
    decided = observe.selected_clusters(state.decisions)
    selected = (decided or ())[: spec.max_clients]
    data_paths: dict[str, str] = {}
    problems: dict[str, Problem] = {}
    available: set[str] = set()
    for cluster in selected:
        path = observe.data_path(state.claims.get(cluster, {}), spec.dataset)
        if path is None:
            problems[cluster] = Problem(
                "NoDataClaim",
                f"cluster {cluster} has no ClusterClaim naming where dataset {spec.dataset!r} lies",
            )
            continue
        data_paths[cluster] = path
        ready, problem = observe.collaborator_state(state.owned.get(ObjectKey("ManifestWork", cluster, work_name(job))))
        # With TLS, a collaborator whose hub-signed identity the controller does not know cannot sign in: its pod
        # may run, its SuperNode is refused.
        if ready and (not spec.tls or cluster in state.client_keys):
            available.add(cluster)
        if problem is not None:
            problems[cluster] = problem

    services = {
        key.name: obj for key, obj in state.owned.items() if key.kind == SERVICE.kind and key.namespace == job.namespace
    }
    listeners = observe.listener_statuses(spec, job, services, state.settings.node_host)
    hosts = server_hosts(spec, job, (listener.address for listener in listeners))
    existing_tls = _tls_from_secret(state.owned.get(ObjectKey(SECRET.kind, job.namespace, tls_secret_name(job))))
    # A listener's address appears (a load balancer's) or moves (a node's): the certificate must name it.
    stale = existing_tls is not None and not set(hosts) <= set(existing_tls.hosts)
    tls = state.issued_tls or existing_tls
    superlink = state.owned.get(ObjectKey(DEPLOYMENT.kind, job.namespace, aggregator_name(job)))
    federation_ready = observe.deployment_available(superlink) and (not spec.tls or existing_tls is not None)
    generation = int((resource.get("metadata") or {}).get("generation") or 1)
    observation = Observation(
        now=state.now,
        generation=generation,
        placement_decided=decided is not None,
        selected_clusters=selected,
        available_clusters=frozenset(available),
        collaborator_problems=problems,
        federation_ready=federation_ready,
        run_submitted=run_id(resource) is not None,
        events=state.events,
        run_failure=state.run_failure,
        model_path=model_path(spec, job, run_id(resource)),
    )
    result = step(spec, status, observation)

    new_status = result.status.model_copy(update={"listeners": listeners})

    desired: list[dict[str, Any]] = []
    needs_tls = False
    collaborators: tuple[str, ...] = ()
    deploy = next((a for a in result.actions if isinstance(a, DeployCollaborators)), None)
    placed = [c for c in deploy.clusters if c in data_paths] if deploy is not None else list(data_paths)
    # Who the SuperLink lets in besides the operators: each placed cluster's add-on registration subject.
    allowed = {state.collaborator_users.get(c) or collaborator_user(c): c for c in placed}
    for action in result.actions:
        if isinstance(action, EnsureFederation | ScaleDownFederation):
            replicas = 1 if isinstance(action, EnsureFederation) else 0
            needs_tls = replicas == 1 and spec.tls and state.issued_tls is None and (tls is None or stale)
            desired += federation_objects(
                spec,
                job,
                tls,
                replicas=replicas,
                collaborators=allowed,
                client_keys={c: state.client_keys[c] for c in placed if c in state.client_keys},
                address=observe.aggregator_address(listeners, job),
            )
        elif isinstance(action, DeployCollaborators) and (tls is not None or not spec.tls):
            address = observe.aggregator_address(listeners, job)
            ca = tls.ca if tls else state.ca_pem
            collaborators = tuple(placed)
            # The collaborators the aggregator admits: with TLS, those whose hub-signed key is known.
            users = tuple(sorted(u for u, c in allowed.items() if not spec.tls or c in state.client_keys))
            desired += [
                collaborator_work(
                    spec,
                    job,
                    cluster,
                    data_paths[cluster],
                    address,
                    ca,
                    state.client_keys.get(cluster),
                    user=state.collaborator_users.get(cluster) or collaborator_user(cluster),
                    collaborators=users,
                )
                for cluster in collaborators
            ]
    desired_keys = {key_of(o) for o in desired}
    apply = tuple(o for o in desired if _differs(o, state.owned.get(key_of(o))))
    delete = tuple(sorted((k for k in state.owned if k not in desired_keys), key=_deletion_order))
    return Plan(
        status=new_status,
        status_changed=_status_dict(new_status) != _status_dict(status),
        apply=apply,
        delete=delete,
        events=tuple(result.events()),
        submit=next((a for a in result.actions if isinstance(a, SubmitRun)), None),
        stop_run=any(isinstance(a, StopRun) for a in result.actions),
        needs_tls=needs_tls,
        server_hosts=hosts,
        collaborators=collaborators,
    )


def status_body(status: FederatedLearningStatus) -> dict[str, Any]:
    """The status as the resource carries it (camelCase, no nulls)."""
    return _status_dict(status)


def _status_dict(status: FederatedLearningStatus) -> dict[str, Any]:
    body: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def _differs(desired: Mapping[str, Any], existing: Mapping[str, Any] | None) -> bool:
    if existing is None:
        return True
    have = ((existing.get("metadata") or {}).get("annotations") or {}).get(DESIRED_HASH)
    return bool(have != desired["metadata"]["annotations"][DESIRED_HASH])


def _deletion_order(key: ObjectKey) -> tuple[int, str, str]:
    # Spokes first (frees the clusters soonest), the certificate last (the SuperLink mounts it).
    order = {MANIFEST_WORK.kind: 0, SECRET.kind: 9}
    return order.get(key.kind, 5), key.namespace, key.name


def _tls_from_secret(secret: Mapping[str, Any] | None) -> TlsMaterial | None:
    if secret is None:
        return None
    data = secret.get("data") or {}
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    try:
        texts = {
            k: base64.b64decode(data[k]).decode()
            for k in ("ca.crt", "tls.crt", "tls.key", "serverapp.crt", "serverapp.key")
        }
    except (KeyError, ValueError):
        return None  # none, or one from before the ServerApp had its own certificate: issued anew
    return TlsMaterial(
        ca=texts["ca.crt"],
        certificate=texts["tls.crt"],
        key=texts["tls.key"],
        serverapp_certificate=texts["serverapp.crt"],
        serverapp_key=texts["serverapp.key"],
        hosts=_recorded_names(annotations.get(SERVER_NAMES_ANNOTATION), texts["tls.crt"]),
    )


def _recorded_names(annotation: str | None, certificate: str) -> tuple[str, ...]:
    """The names a SuperLink certificate is valid for: as recorded on its Secret, or, on a Secret from before they
    were recorded, read from the certificate (so that an upgrade replaces no running SuperLink)."""
    if annotation is not None:
        return tuple(name for name in annotation.split(",") if name)
    return server_names(certificate)


def _invalid(status: FederatedLearningStatus, state: JobState, error: ValidationError) -> Plan:
    problems = "; ".join(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
    )
    return _refused(status, state, "InvalidSpec", f"the spec is not valid: {problems}")


def _refused(status: FederatedLearningStatus, state: JobState, reason: str, message: str) -> Plan:
    """Failed with ``reason``, and nothing of the job left on the hub."""
    now = rfc3339(state.now)
    conditions = {c.type: c for c in status.conditions}
    old = conditions.get("Succeeded")
    conditions["Succeeded"] = Condition(
        type="Succeeded",
        status="False",
        reason=reason,
        message=message,
        last_transition_time=old.last_transition_time if old is not None and old.status == "False" else now,
    )
    new = status.model_copy(
        update={"phase": Phase.FAILED, "message": message, "conditions": tuple(conditions.values())}
    )
    changed = _status_dict(new) != _status_dict(status)
    events = (EmitEvent("Warning", reason, message),) if changed else ()
    return Plan(status=new, status_changed=changed, events=events, delete=tuple(state.owned))
