"""The kopf operator: handlers, indices and the I/O of one reconcile.

Reads cost no request: kopf indices keep what a reconcile needs in memory, fed by watch streams (the objects
the controller owns, by job; PlacementDecisions, by Placement; ManagedClusters' ClusterClaims; the subject of
each cluster's add-on registration, from its ManagedClusterAddOn; the collaborators' identity records). A reconcile
runs `fleet.controller.reconcile.reconcile` on that state and writes only the difference: objects missing or
changed, objects no longer wanted, the status when it changed, an Event per transition. A job is reconciled
on create, update and resume, and by a timer (``interval``) that picks up what the indices saw change
(decisions, the collaborators' status feedback, the run's progress).

Errors: a conflict, throttling, a 5xx answer or a lost connection raises `kopf.TemporaryError`, so kopf
retries with backoff; such errors never change a job's phase. Deleting a FederatedLearning resource runs the
finalizer: the job's ManifestWorks (which owner references cannot reach across namespaces) and hub objects
are deleted, and the run is stopped; an object in a namespace being deleted goes with it, even once the
controller's Role there has gone first.

A restarted controller starts from the indices, so it finds every object it made (no duplicates), and from
the run id annotation, so it never submits a run twice; it reads the run's progress from the start again,
which the phase machine merges by round number.

Collaborator identities (`fleet.controller.identity`): every add-on registration CSR the hub signs is checked
as it is seen (its requester must be the cluster's klusterlet) and recorded in a ConfigMap of the controller's
namespace, which outlives the CSR (deleted an hour after issuance) and a restart. Each job registers the key of
its placed clusters' current identities with its SuperLink and records (cluster -> key digest, node id) in the
``federation.fleet.dev/collaborators`` annotation; when OCM renews a certificate (a new key), the new key is
registered, the old node unregistered and the collaborator's pod replaced (its ManifestWork names the key); a
cluster that leaves the job is unregistered and dropped from the SuperLink's allow-list.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import kopf
from pydantic import ValidationError

from fleet.claims import API_GROUP
from fleet.federation.progress import Event
from fleet.hub import ADDON_NAME, CONTROLLER_NAME, CONTROLLER_NAMESPACE, JOB_LABEL, serverapp_user
from fleet.lifecycle import FEDERATION_READY, TERMINAL, EmitEvent
from fleet.models import FederatedLearningSpec, Framework
from fleet.runtimes import DEFAULT_FRAMEWORK, framework_of, runtime_for

from .cluster_labels import register_cluster_labels
from .hub import (
    ApiError,
    Credentials,
    HubCA,
    HubClient,
    TransientError,
    load_or_create_hub_ca,
    load_or_create_operator,
    still_good,
)
from .identity import (
    CLUSTER_LABEL,
    IDENTITY_COMPONENT,
    CollaboratorIdentity,
    CollaboratorRejectedError,
    Subject,
    expected_subject,
    identity_from_csr,
    identity_from_record,
    identity_record,
)
from .metrics import HealthServer, Metrics
from .objects import (
    COMPONENT_LABEL,
    CONFIG_MAP,
    CSR,
    CSR_ADDON_LABEL,
    CSR_CLUSTER_LABEL,
    FEDERATED_LEARNING,
    JOB_NAMESPACE_LABEL,
    KINDS_BY_NAME,
    MANAGED_BY_LABEL,
    MANAGED_CLUSTER,
    MANAGED_CLUSTER_ADDON,
    MANIFEST_WORK,
    NAMESPACE,
    OWNED_KINDS,
    PLACEMENT_DECISION,
    PLACEMENT_LABEL,
    RUN_ID_ANNOTATION,
    JobRef,
    ObjectKey,
    aggregator_name,
    model_dir,
    progress_url,
)
from .observe import cluster_claims, selected_clusters
from .progress import HttpProgress, ProgressSource, ProgressUnavailableError
from .reconcile import JobState, Settings, current_status, job_ref, reconcile, run_id, status_body
from .resume import RESUMES_ANNOTATION, Resume, resume_lost_run
from .runs import KeyRegistry, KeyRetiredError, RunBackend, RunSubmissionError

logger = logging.getLogger("fleet.controller")

_SUBMIT_ATTEMPTS = 5
"""Failed submissions before the job fails (a SuperLink just started may refuse the first ones)."""
_RUN_STATE_SECONDS = 10.0
"""How often a running job's run state is asked of its SuperLink (progress events come on every reconcile)."""
COLLABORATORS_ANNOTATION = f"{API_GROUP}/collaborators"
"""On the FederatedLearning resource: cluster -> {"key": digest, "node": node id} of every collaborator key
registered with the job's SuperLink, so that a restarted controller knows what to replace and unregister."""


@dataclass(frozen=True)
class Options:
    namespaces: tuple[str, ...] = ()
    """Namespace patterns to serve (kopf's globs); empty: the whole cluster."""
    interval: float = 2.0
    """Seconds between timer reconciles of each job."""
    node_host: str = ""
    """Where the hub's nodes are reached, for NodePort listener addresses."""
    ca_namespace: str = CONTROLLER_NAMESPACE
    host: str = "0.0.0.0"
    metrics_port: int = 9090
    health_port: int = 8080
    standalone: bool = True
    exit_timeout: float = 2.0
    """Seconds a stopping controller waits for reconciles under way."""


@dataclass
class _JobMemory:
    """What the controller remembers of a job between reconciles (lost on restart, rebuilt from the hub)."""

    status: dict[str, Any] | None = None
    """The status last written: newer than a watch event that has not caught up yet."""
    run_id: int | None = None
    pending: list[Event] = field(default_factory=list)
    """Progress events read but not yet in a written status."""
    registered: dict[str, tuple[str, int]] | None = None
    """Cluster -> (key digest, node id) registered with the job's SuperLink (None: not read from the resource
    yet)."""
    warned: set[str] = field(default_factory=set)
    """Clusters whose refused or retired identity this job's Events told already."""
    submit_failures: int = 0
    last_run_check: float = 0.0
    run_failure: str | None = None
    resumed: list[EmitEvent] = field(default_factory=list)
    """Events of runs resumed since the last reconcile (`resume`)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Outcome:
    events: tuple[EmitEvent, ...]
    cpu_seconds: float
    """CPU time of the reconcile's thread."""
    wall_seconds: float
    api_wait_seconds: float
    """Of the wall time, the time spent waiting for the API server's answers."""
    requests: int
    """Requests to the Kubernetes API the reconcile made."""


class Controller:
    """The I/O of reconciles; the handlers of `build_registry` call it with snapshots of the indices."""

    def __init__(
        self,
        hub: HubClient,
        options: Options = Options(),
        *,
        runs: RunBackend | Mapping[Framework, RunBackend] | None = None,
        progress: ProgressSource | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.hub = hub
        self.options = options
        given = {DEFAULT_FRAMEWORK: runs} if runs is not None and not isinstance(runs, Mapping) else dict(runs or {})
        self.backends: dict[Framework, RunBackend] = {
            f: given.get(f) or runtime_for(f).run_backend() for f in Framework
        }
        """Each runtime's run backend (`fleet.runtimes.Runtime.run_backend`); ``runs`` alone is the default
        framework's."""
        for framework, backend in self.backends.items():
            if runtime_for(framework).registers_keys and not isinstance(backend, KeyRegistry):
                raise TypeError(f"{framework}'s run backend {backend!r} must also register the collaborators' keys")
        self.progress = progress or HttpProgress(progress_url)
        self.metrics = metrics or Metrics()
        # Counted where each request is made: reconciles of different jobs run at once in threads.
        hub.on_request = self.metrics.count_request
        self.clock = clock
        self.ca: HubCA | None = None
        self._operator: Credentials | None = None
        self.identities: dict[str, CollaboratorIdentity] = {}
        """The newest accepted identity of each cluster (recorded, or read from its record)."""
        self.rejections: dict[str, str] = {}
        """Cluster (as a refused CSR was labelled) -> why: told to the jobs the cluster is placed for."""
        self._identity_lock = threading.Lock()
        self.jobs: dict[JobRef, _JobMemory] = {}
        self.outcomes: deque[Outcome] = deque(maxlen=100_000)
        """The latest reconciles' costs, for the benchmark."""
        self._ca_lock = threading.Lock()

    def runs_of(self, spec: FederatedLearningSpec) -> RunBackend:
        return self.backends[spec.framework]

    def _keys(self, resource: Mapping[str, Any]) -> KeyRegistry:
        """The job's runtime's key registry (checked at start: a runtime that registers keys has one)."""
        backend = self.backends[framework_of(resource)]
        assert isinstance(backend, KeyRegistry)
        return backend

    def memory(self, job: JobRef) -> _JobMemory:
        memory = self.jobs.get(job)
        if memory is None:
            memory = self.jobs[job] = _JobMemory()
        return memory

    def hub_ca(self) -> HubCA:
        with self._ca_lock:
            if self.ca is None:
                self.ca = load_or_create_hub_ca(self.hub, self.options.ca_namespace)
            return self.ca

    def operator_credentials(self) -> Credentials:
        """The controller's own client certificate (its Secret; renewed when a fifth of its life is left)."""
        ca = self.hub_ca()
        with self._ca_lock:
            found = self._operator
            if found is None or not still_good(found.certificate, ca.certificate, self.clock()):
                found = self._operator = load_or_create_operator(self.hub, ca, self.clock(), self.options.ca_namespace)
            return found

    def credentials(self, spec: FederatedLearningSpec) -> Credentials | None:
        return self.operator_credentials() if spec.tls else None

    # --- identities ------------------------------------------------------------------------------------------

    def record_identity(
        self,
        csr: Mapping[str, Any],
        subjects: Mapping[str, Subject],
        records: Mapping[str, Mapping[str, Any]],
    ) -> CollaboratorIdentity | None:
        """Check an add-on registration CSR and record its certificate as its requester's cluster's identity when
        it is newer than the one known; the identity recorded, or None. ``records``: the identity records by
        cluster (the index), consulted when this controller has not seen the cluster yet."""
        labelled = str(((csr.get("metadata") or {}).get("labels") or {}).get(CSR_CLUSTER_LABEL) or "?")
        try:
            identity = identity_from_csr(csr, self.hub_ca().certificate, subjects, self.clock())
        except CollaboratorRejectedError as error:
            logger.warning("refused an add-on registration certificate: %s", error)
            with self._identity_lock:
                self.rejections[labelled] = str(error)
            return None
        if identity is None:
            return None
        cluster = identity.cluster
        known = self._known_identity(cluster, subjects, records)
        if not identity.newer_than(known):
            return None
        self.hub.apply(CONFIG_MAP, identity_record(identity, self.options.ca_namespace))
        with self._identity_lock:
            self.identities[cluster] = identity
            self.rejections.pop(cluster, None)
        logger.info("recorded cluster %s's registration certificate from CSR %s", cluster, identity.source)
        return identity

    def _known_identity(
        self, cluster: str, subjects: Mapping[str, Subject], records: Mapping[str, Mapping[str, Any]]
    ) -> CollaboratorIdentity | None:
        """The newest identity of ``cluster`` this controller knows: recorded by it, or kept in the record."""
        with self._identity_lock:
            known = self.identities.get(cluster)
        record = records.get(cluster)
        if record is not None:
            try:
                stored = identity_from_record(
                    record, self.hub_ca().certificate, subjects.get(cluster) or expected_subject(cluster)
                )
            except CollaboratorRejectedError as error:
                logger.warning("ignored the identity record of cluster %s: %s", cluster, error)
            else:
                if stored.newer_than(known):
                    known = stored
                    with self._identity_lock:
                        self.identities[cluster] = stored
        return known

    def current_identities(
        self,
        clusters: Iterable[str],
        subjects: Mapping[str, Subject],
        records: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, CollaboratorIdentity]:
        """The identity valid now of each of ``clusters`` that has one."""
        now = self.clock()
        found = {}
        for cluster in clusters:
            identity = self._known_identity(cluster, subjects, records)
            if identity is not None and identity.valid_at(now):
                found[cluster] = identity
        return found

    # --- one reconcile --------------------------------------------------------------------------------------

    def reconcile_job(
        self,
        body: Mapping[str, Any],
        owned: Mapping[ObjectKey, Mapping[str, Any]],
        decisions: list[Mapping[str, Any]],
        claims: Mapping[str, Mapping[str, str]],
        subjects: Mapping[str, Subject] | None = None,
        records: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Outcome:
        """One reconcile of the job ``body``. ``subjects``: the selected clusters' add-on registration subjects
        where the hub reports them; ``records``: their identity records (whose keys the job's SuperLink must know
        before their SuperNodes may connect)."""
        started, wall, before = time.thread_time(), time.perf_counter(), self.hub.thread_request_count()
        waited = self.hub.waited_seconds()
        subjects, records = subjects or {}, records or {}
        job = job_ref(body)
        memory = self.memory(job)
        resource = self._freshest(body, memory)
        events, run_failure = self._follow_run(job, resource, memory)
        clusters = selected_clusters(decisions) or ()
        identities = self.current_identities(clusters, subjects, records)
        state = JobState(
            resource=resource,
            decisions=decisions,
            claims=claims,
            owned=owned,
            ca_pem=self.hub_ca().certificate,
            now=self.clock(),
            events=tuple(events),
            run_failure=run_failure,
            settings=Settings(node_host=self.options.node_host),
            collaborator_users={c: (subjects.get(c) or expected_subject(c)).user for c in clusters},
            client_keys={c: identity.key_digest for c, identity in identities.items()},
        )
        plan = reconcile(state)
        if plan.needs_tls:
            hosts = plan.server_hosts
            issued = self.hub_ca().issue_federation(
                aggregator_name(job), hosts, serverapp_user(job.namespace, job.name)
            )
            plan = reconcile(replace(state, issued_tls=replace(issued, hosts=hosts)))

        for obj in plan.apply:
            self.hub.apply(KINDS_BY_NAME[obj["kind"]], obj)
        for key in plan.delete:
            self.hub.delete(KINDS_BY_NAME[key.kind], key.namespace, key.name)
        events_out = [*memory.resumed, *plan.events]
        memory.resumed.clear()
        status = plan.status
        if (
            _condition_true(status, FEDERATION_READY)
            and _tls(resource)
            and status.phase not in TERMINAL
            and runtime_for(framework_of(resource)).registers_keys
        ):
            self._sync_collaborators(job, resource, plan.collaborators, identities, memory, events_out)
        if plan.submit is not None and memory.run_id is None:
            spec = FederatedLearningSpec.model_validate(resource["spec"])
            try:
                memory.run_id = self.runs_of(spec).submit(job, spec, model_dir(spec, job), self.credentials(spec))
            except RunSubmissionError as error:
                memory.submit_failures += 1
                if memory.submit_failures < _SUBMIT_ATTEMPTS:
                    raise TransientError(0, f"submitting the run of {job.namespace}/{job.name}: {error}") from error
                memory.run_failure = f"the run could not be submitted after {_SUBMIT_ATTEMPTS} attempts: {error}"
                raise TransientError(0, memory.run_failure) from error
            self.hub.patch(
                FEDERATED_LEARNING,
                job.namespace,
                job.name,
                {"metadata": {"annotations": {RUN_ID_ANNOTATION: str(memory.run_id)}}},
            )
        if plan.stop_run and memory.run_id is not None:
            spec = FederatedLearningSpec.model_validate(resource["spec"])
            try:
                self.runs_of(spec).stop(job, memory.run_id, self.credentials(spec))
            except Exception as error:  # the job fails either way; the SuperLink is being scaled down
                logger.warning("stopping run %s of %s/%s: %s", memory.run_id, job.namespace, job.name, error)
        if plan.status_changed:
            body_status = status_body(status)
            self.hub.patch(FEDERATED_LEARNING, job.namespace, job.name, {"status": body_status}, status=True)
            memory.status = body_status
        memory.pending.clear()
        self.metrics.observe(job.namespace, job.name, status)
        outcome = Outcome(
            tuple(events_out),
            time.thread_time() - started,
            time.perf_counter() - wall,
            self.hub.waited_seconds() - waited,
            self.hub.thread_request_count() - before,
        )
        self.outcomes.append(outcome)
        return outcome

    def _sync_collaborators(
        self,
        job: JobRef,
        resource: Mapping[str, Any],
        collaborators: tuple[str, ...],
        identities: Mapping[str, CollaboratorIdentity],
        memory: _JobMemory,
        events: list[EmitEvent],
    ) -> None:
        """Make the SuperLink's registered keys those of ``collaborators``' current identities: register new and
        renewed keys (unregistering the replaced node), unregister clusters that left the job."""
        if memory.registered is None:
            memory.registered = registered_collaborators(resource)
        registered = memory.registered
        before = dict(registered)
        credentials = self.operator_credentials()
        keys = self._keys(resource)
        for cluster in collaborators:
            identity = identities.get(cluster)
            if identity is None:
                with self._identity_lock:
                    reason = self.rejections.get(cluster)
                if cluster not in memory.warned:
                    memory.warned.add(cluster)
                    if reason is not None:
                        events.append(EmitEvent("Warning", "CollaboratorRejected", reason))
                    else:
                        events.append(EmitEvent("Warning", "NoRegistrationCertificate", _no_identity(cluster)))
                continue
            have = registered.get(cluster)
            if have is not None and have[0] == identity.key_digest:
                continue
            try:
                node = keys.register(job, cluster, identity.public_key, credentials)
            except KeyRetiredError as error:
                if f"{cluster}:{identity.key_digest}" not in memory.warned:
                    memory.warned.add(f"{cluster}:{identity.key_digest}")
                    message = f"{error}: it can rejoin once OCM renews its certificate (within 24 h)"
                    events.append(EmitEvent("Warning", "CollaboratorKeyRetired", message))
                continue
            except Exception as error:  # the SuperLink not answering yet: the next reconcile tries again
                logger.info("registering %s with %s/%s: %s", cluster, job.namespace, job.name, error)
                continue
            registered[cluster] = (identity.key_digest, node)
            if have is None:
                events.append(EmitEvent("Normal", "CollaboratorRegistered", f"cluster {cluster}'s key registered"))
                continue
            events.append(
                EmitEvent(
                    "Normal",
                    "CollaboratorKeyRenewed",
                    f"cluster {cluster}'s renewed key registered (CSR {identity.source}); its collaborator restarts",
                )
            )
            self._unregister(keys, job, cluster, have[1], credentials)
        for cluster in sorted(set(registered) - set(collaborators)):
            if self._unregister(keys, job, cluster, registered[cluster][1], credentials):
                del registered[cluster]
                events.append(EmitEvent("Normal", "CollaboratorRemoved", f"cluster {cluster} left the job"))
        if registered != before:
            value = json.dumps({c: {"key": k, "node": n} for c, (k, n) in sorted(registered.items())})
            self.hub.patch(
                FEDERATED_LEARNING,
                job.namespace,
                job.name,
                {"metadata": {"annotations": {COLLABORATORS_ANNOTATION: value}}},
            )

    def _unregister(self, keys: KeyRegistry, job: JobRef, cluster: str, node: int, credentials: Credentials) -> bool:
        """Unregister a node; False when the SuperLink did not answer (tried again on the next reconcile)."""
        try:
            keys.unregister(job, node, credentials)
        except Exception as error:
            if "not found" in str(error).lower():
                return True  # gone already
            logger.info("unregistering %s's node %s from %s/%s: %s", cluster, node, job.namespace, job.name, error)
            return False
        return True

    def _freshest(self, body: Mapping[str, Any], memory: _JobMemory) -> dict[str, Any]:
        """The resource with the status and run id this controller last wrote, when the watch lags behind."""
        resource = {k: body[k] for k in body}
        metadata = dict(resource.get("metadata") or {})
        if memory.run_id is None:
            memory.run_id = run_id(resource)
        elif run_id(resource) is None:
            metadata["annotations"] = {
                **(metadata.get("annotations") or {}),
                RUN_ID_ANNOTATION: str(memory.run_id),
            }
        resource["metadata"] = metadata
        if memory.status is not None:
            resource["status"] = memory.status
        return resource

    def _follow_run(
        self, job: JobRef, resource: Mapping[str, Any], memory: _JobMemory
    ) -> tuple[list[Event], str | None]:
        if memory.run_id is None or current_status(resource).phase in TERMINAL:
            return [], memory.run_failure
        try:
            spec = FederatedLearningSpec.model_validate(resource.get("spec") or {})
        except ValidationError:
            return [], None
        try:
            memory.pending += self.progress.read(job, model_dir(spec, job))
        except ProgressUnavailableError as error:
            logger.info("progress of %s/%s not readable yet: %s", job.namespace, job.name, error)
        failure = memory.run_failure
        now = time.monotonic()
        if failure is None and now - memory.last_run_check >= _RUN_STATE_SECONDS:
            memory.last_run_check = now
            try:
                failure = self.runs_of(spec).failure(job, memory.run_id, self.credentials(spec))
            except Exception as error:  # the SuperLink is unreachable now: its Deployment status tells the rest
                logger.info("run state of %s/%s unknown: %s", job.namespace, job.name, error)
            if failure is not None:
                memory.run_failure = failure
                # The ServerApp writes its last event before it ends: read once more before judging.
                try:
                    memory.pending += self.progress.read(job, model_dir(spec, job))
                except ProgressUnavailableError as error:
                    logger.info("progress of %s/%s not readable yet: %s", job.namespace, job.name, error)
        resume = resume_lost_run(failure, memory.pending, resource, model_dir(spec, job))
        if resume is not None:
            self._resubmit(job, spec, memory, resume)
            failure = None
        return list(memory.pending), failure

    def _resubmit(self, job: JobRef, spec: FederatedLearningSpec, memory: _JobMemory, resume: Resume) -> None:
        """Submit the run again where the lost one left off; the job goes on Running."""
        try:
            run = self.runs_of(spec).submit(
                job, spec, model_dir(spec, job), self.credentials(spec), resume=resume.config
            )
        except RunSubmissionError as error:
            raise TransientError(0, f"resuming the run of {job.namespace}/{job.name}: {error}") from error
        memory.run_id, memory.run_failure = run, None
        annotations = {RUN_ID_ANNOTATION: str(run), RESUMES_ANNOTATION: str(resume.resumes)}
        self.hub.patch(FEDERATED_LEARNING, job.namespace, job.name, {"metadata": {"annotations": annotations}})
        memory.resumed.append(EmitEvent("Warning", "RunResumed", resume.message))
        logger.warning("%s/%s: %s", job.namespace, job.name, resume.message)

    # --- deletion -------------------------------------------------------------------------------------------

    def delete_job(self, body: Mapping[str, Any], owned: Mapping[ObjectKey, Mapping[str, Any]]) -> int:
        """Delete everything the job made, on the spokes first; the number of objects deleted."""
        job = job_ref(body)
        memory = self.memory(job)
        run = memory.run_id or run_id(body)
        status = current_status(body)
        if run is not None and status.phase not in TERMINAL:
            try:
                spec = FederatedLearningSpec.model_validate(body.get("spec") or {})
                self.runs_of(spec).stop(job, run, self.credentials(spec))
            except Exception as error:  # the federation goes away with the job anyway
                logger.info("stopping run %s of %s/%s: %s", run, job.namespace, job.name, error)
        keys = set(owned)
        # The index may not have seen a ManifestWork created a moment ago: ask the hub for the job's works.
        selector = f"{JOB_LABEL}={job.name},{JOB_NAMESPACE_LABEL}={job.namespace}"
        keys |= {
            ObjectKey(MANIFEST_WORK.kind, w["metadata"]["namespace"], w["metadata"]["name"])
            for w in self.hub.list(MANIFEST_WORK, None, selector)
        }
        deleted = 0
        for key in sorted(keys, key=lambda k: (k.kind != MANIFEST_WORK.kind, k.kind, k.namespace, k.name)):
            deleted += self._delete(key)
        self.progress.forget(job)
        self.metrics.forget(job.namespace, job.name)
        self.jobs.pop(job, None)
        return deleted

    def _delete(self, key: ObjectKey) -> bool:
        """Delete one of a job's objects; False when it was gone already or goes with its namespace."""
        try:
            return self.hub.delete(KINDS_BY_NAME[key.kind], key.namespace, key.name)
        except ApiError as error:
            # The controller writes through a Role per namespace: a namespace being deleted loses its RoleBinding
            # with the rest of its objects, which go with it. Waiting for the permission to come back would hold
            # the finalizer, and so the namespace, forever; a 403 anywhere else is a missing Role, reported.
            if error.status == 403 and self._namespace_ending(key.namespace):
                return False
            raise

    def _namespace_ending(self, namespace: str) -> bool:
        found = self.hub.get(NAMESPACE, "", namespace)
        return found is None or bool((found.get("metadata") or {}).get("deletionTimestamp"))


# --- kopf wiring --------------------------------------------------------------------------------------------


def _slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconcile needs of an owned object: identity, labels, annotations, status, a Secret's data."""
    metadata = body.get("metadata") or {}
    slim: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "labels": dict(metadata.get("labels") or {}),
            "annotations": dict(metadata.get("annotations") or {}),
        },
        "status": body.get("status") or {},
    }
    if body.get("kind") == "Secret":
        slim["data"] = dict(body.get("data") or {})
    return slim


def _condition_true(status: Any, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in status.conditions)


def _tls(resource: Mapping[str, Any]) -> bool:
    return bool((resource.get("spec") or {}).get("tls", True))


def _no_identity(cluster: str) -> str:
    return (
        f"cluster {cluster} has no hub-signed registration certificate valid now that the controller has seen: it "
        "waits for one (OCM signs it once the cluster's fleet-collaborator add-on registers, and renews it when "
        "20-25% of its 24 hours are left; a certificate whose CSR was deleted before the controller saw it is "
        "replaced at the next renewal)"
    )


def registered_collaborators(resource: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """The job's registered collaborator keys, from its `COLLABORATORS_ANNOTATION` (empty when unreadable)."""
    text = ((resource.get("metadata") or {}).get("annotations") or {}).get(COLLABORATORS_ANNOTATION)
    try:
        entries = json.loads(text) if text else {}
        return {str(c): (str(e["key"]), int(e["node"])) for c, e in dict(entries).items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        logger.warning("ignored an unreadable %s annotation: %r", COLLABORATORS_ANNOTATION, text)
        return {}


def _by_cluster(indices: Mapping[str, Any], name: str, clusters: Iterable[str] | None = None) -> dict[str, Any]:
    """An index keyed by cluster, as cluster -> its (last) value; for ``clusters`` only when given."""
    index = indices.get(name)
    if index is None:
        return {}
    found: dict[str, Any] = {}
    for cluster in clusters if clusters is not None else list(index):
        for value in index.get(cluster, ()):
            found[cluster] = value
    return found


def _owned_snapshot(indices: Mapping[str, Any], job: JobRef) -> dict[ObjectKey, dict[str, Any]]:
    owned: dict[ObjectKey, dict[str, Any]] = {}
    for kind in OWNED_KINDS:
        index = indices.get(f"owned_{kind.plural}")
        if index is None:
            continue
        for obj in index.get((job.namespace, job.name), ()):
            metadata = obj["metadata"]
            owned[ObjectKey(obj["kind"] or kind.kind, metadata.get("namespace") or "", metadata["name"])] = obj
    return owned


def _decisions_snapshot(indices: Mapping[str, Any], job: JobRef) -> list[Mapping[str, Any]]:
    index = indices.get("placement_decisions")
    return list(index.get((job.namespace, job.name), ())) if index is not None else []


def _claims_snapshot(indices: Mapping[str, Any], clusters: Iterable[str]) -> dict[str, Mapping[str, str]]:
    index = indices.get("cluster_claims")
    if index is None:
        return {}
    found: dict[str, Mapping[str, str]] = {}
    for cluster in clusters:
        for claims in index.get(cluster, ()):
            found[cluster] = claims
    return found


def build_registry(controller: Controller, health: HealthServer | None = None) -> kopf.OperatorRegistry:
    """The operator's handlers, registered in a registry of their own (one per controller instance)."""
    registry = kopf.OperatorRegistry()
    options = controller.options
    fl = (FEDERATED_LEARNING.group, FEDERATED_LEARNING.version, FEDERATED_LEARNING.plural)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = f"{API_GROUP}/cleanup"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=API_GROUP, key="last-handled-configuration"
        )
        # Only the Events the controller means (transitions) reach the API, not every log line.
        settings.posting.level = logging.CRITICAL
        settings.watching.server_timeout = 300
        _watch_only_what_is_needed(settings)
        settings.queueing.exit_timeout = options.exit_timeout
        settings.background.instant_exit_timeout = options.exit_timeout
        await asyncio.to_thread(controller.hub_ca)
        if health is not None:
            await health.start()
            health.ready.set()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if health is not None:
            await health.stop()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return _connection_info(controller.hub)

    def owned_index(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
        job, namespace = labels.get(JOB_LABEL), labels.get(JOB_NAMESPACE_LABEL)
        if not job or not namespace:
            return {}
        return {(namespace, job): _slim(body)}

    for kind in OWNED_KINDS:
        kopf.index(
            kind.group,
            kind.version,
            kind.plural,
            id=f"owned_{kind.plural}",
            labels={MANAGED_BY_LABEL: CONTROLLER_NAME},
            registry=registry,
        )(owned_index)

    @kopf.index(*_gvr(PLACEMENT_DECISION), id="placement_decisions", registry=registry)
    def placement_decisions(
        body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
    ) -> dict[tuple[str, str], dict[str, Any]]:
        placement = labels.get(PLACEMENT_LABEL)
        if not placement or not namespace:
            return {}
        return {
            (namespace, placement): {
                "metadata": {"name": body["metadata"]["name"]},
                "status": body.get("status"),
            }
        }

    @kopf.index(*_gvr(MANAGED_CLUSTER), id="cluster_claims", registry=registry)
    def cluster_claims_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, str]]:
        return {name: cluster_claims(body)}

    @kopf.index(*_gvr(MANAGED_CLUSTER_ADDON), id="collaborator_subjects", registry=registry)
    def collaborator_subjects(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, Subject]:
        # One ManagedClusterAddOn of this add-on per cluster, in the cluster's namespace.
        if name != ADDON_NAME or not namespace:
            return {}
        return {namespace: expected_subject(namespace, body)}

    @kopf.index(
        *_gvr(CONFIG_MAP),
        id="collaborator_identities",
        labels={MANAGED_BY_LABEL: CONTROLLER_NAME, COMPONENT_LABEL: IDENTITY_COMPONENT},
        registry=registry,
    )
    def collaborator_identities(
        name: str, namespace: str | None, body: kopf.Body, labels: kopf.Labels, **_: Any
    ) -> dict[str, dict[str, Any]]:
        cluster = labels.get(CLUSTER_LABEL)
        # Only the records in the controller's namespace, where no spoke can write.
        if not cluster or namespace != options.ca_namespace:
            return {}
        return {cluster: {"metadata": {"name": name}, "data": dict(body.get("data") or {})}}

    @kopf.on.event(*_gvr(CSR), labels={CSR_ADDON_LABEL: ADDON_NAME}, registry=registry)
    async def registration(body: kopf.Body, type: str | None, **kwargs: Any) -> None:
        if type == "DELETED":  # Kubernetes' cleaner, an hour after issuance: the record keeps the identity
            return
        indices = indices_of(kwargs)
        subjects = _by_cluster(indices, "collaborator_subjects")
        records = _by_cluster(indices, "collaborator_identities")
        try:
            await asyncio.to_thread(controller.record_identity, body, subjects, records)
        except ApiError as error:  # kopf does not retry event handlers: the next event of the CSR does
            logger.warning("recording the identity of CSR %s: %s", body.get("metadata", {}).get("name"), error)

    async def run(body: kopf.Body, retry: int, indices: Mapping[str, Any]) -> None:
        job = job_ref(body)
        memory = controller.memory(job)
        async with memory.lock:
            if controller.jobs.get(job) is not memory:
                return  # deleted while this reconcile waited for the lock: re-applying would orphan objects
            owned = _owned_snapshot(indices, job)
            decisions = _decisions_snapshot(indices, job)
            clusters = selected_clusters(decisions) or ()
            claims = _claims_snapshot(indices, clusters)
            subjects = _by_cluster(indices, "collaborator_subjects", clusters)
            records = _by_cluster(indices, "collaborator_identities", clusters)
            started = time.perf_counter()
            try:
                outcome = await asyncio.to_thread(
                    controller.reconcile_job, body, owned, decisions, claims, subjects, records
                )
            except TransientError as error:
                controller.metrics.reconcile_errors.labels("transient").inc()
                raise kopf.TemporaryError(str(error), delay=min(60.0, 2.0 ** min(retry, 6))) from error
            except ApiError as error:
                # Forbidden, invalid, not found: a hub or RBAC problem; retried slowly, the job as it is.
                controller.metrics.reconcile_errors.labels("api").inc()
                kopf.event(body, type="Warning", reason="HubError", message=str(error)[:1000])
                raise kopf.TemporaryError(str(error), delay=60.0) from error
            finally:
                controller.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        for event in outcome.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1000])

    def indices_of(kwargs: Mapping[str, Any]) -> dict[str, Any]:
        names = [f"owned_{k.plural}" for k in OWNED_KINDS]
        names += ["placement_decisions", "cluster_claims", "collaborator_subjects", "collaborator_identities"]
        return {name: kwargs[name] for name in names if name in kwargs}

    @kopf.on.resume(*fl, registry=registry)
    @kopf.on.create(*fl, registry=registry)
    @kopf.on.update(*fl, field="spec", registry=registry)
    async def changed(body: kopf.Body, retry: int, **kwargs: Any) -> None:
        await run(body, retry, indices_of(kwargs))

    @kopf.timer(*fl, interval=options.interval, initial_delay=options.interval, registry=registry)
    async def tick(body: kopf.Body, **kwargs: Any) -> None:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return
        await run(body, int(kwargs.get("retry") or 0), indices_of(kwargs))

    @kopf.on.delete(*fl, registry=registry)
    async def deleted(body: kopf.Body, retry: int, **kwargs: Any) -> None:
        job = job_ref(body)
        memory = controller.memory(job)
        async with memory.lock:
            owned = _owned_snapshot(indices_of(kwargs), job)
            try:
                count = await asyncio.to_thread(controller.delete_job, body, owned)
            except ApiError as error:  # transient or not: the finalizer stays until everything is gone
                controller.metrics.reconcile_errors.labels("delete").inc()
                raise kopf.TemporaryError(str(error), delay=min(60.0, 2.0 ** min(retry, 6))) from error
        logger.info("deleted %d objects of %s/%s", count, job.namespace, job.name)

    register_cluster_labels(registry, controller.hub)  # the ManagedClusterLabels handlers
    return registry


def _gvr(kind: Any) -> tuple[str, str, str]:
    return kind.group, kind.version, kind.plural


def _watch_only_what_is_needed(settings: kopf.OperatorSettings) -> None:
    """Selectors the API server applies to the controller's lists and watches, so that the hub's other Secrets,
    Deployments, Services, PVCs and ConfigMaps never reach the controller's memory: of the kinds it owns, only
    those it labelled; of CSRs, the add-on's; of ManagedClusterAddOns, the add-on's (a handler's ``labels=`` is
    checked by kopf after the object arrived, its watch is not narrowed by it)."""
    for kind in OWNED_KINDS:
        settings.watching.label_selectors[_gvr(kind)] = f"{MANAGED_BY_LABEL}={CONTROLLER_NAME}"
    settings.watching.label_selectors[_gvr(CSR)] = f"{CSR_ADDON_LABEL}={ADDON_NAME}"
    settings.watching.field_selectors[_gvr(MANAGED_CLUSTER_ADDON)] = f"metadata.name={ADDON_NAME}"


def _connection_info(hub: HubClient) -> kopf.ConnectionInfo:
    """kopf's credentials, from the same configuration as the official client's (one source of truth)."""
    configuration = hub.api.configuration
    header = (configuration.api_key or {}).get("authorization") or (configuration.api_key or {}).get("BearerToken")
    scheme, token = None, None
    if header:
        scheme, _, token = str(header).partition(" ")
        if not token:
            scheme, token = "Bearer", scheme
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file or None,
        private_key_path=configuration.key_file or None,
        scheme=scheme,
        token=token,
        default_namespace=CONTROLLER_NAMESPACE,
    )


async def run_operator(
    controller: Controller,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    serve_health: bool = True,
) -> None:
    """Run the operator in the current event loop until ``stop_flag`` is set (or forever)."""
    options = controller.options
    health = (
        HealthServer(
            controller.metrics,
            host=options.host,
            metrics_port=options.metrics_port,
            health_port=options.health_port,
        )
        if serve_health
        else None
    )
    await kopf.operator(
        registry=build_registry(controller, health),
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        standalone=options.standalone,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
