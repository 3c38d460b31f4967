"""What the hub's objects say about a job, read from their status: pure functions over plain dicts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from fleet.claims import dataset_claim
from fleet.lifecycle import Problem
from fleet.models import FederatedLearningSpec, ListenerStatus, ListenerType

from .objects import (
    COLLABORATOR_PROGRESS_DEADLINE,
    PROGRESSING_MESSAGE,
    PROGRESSING_REASON,
    JobRef,
    internal_address,
    listener_name,
)

_DECISION_INDEX = re.compile(r"-decision-([0-9]+)$")


def decision_order(decision: Mapping[str, Any]) -> tuple[int, str]:
    """Where a PlacementDecision stands among its Placement's: OCM pages decisions into objects named
    ``<placement>-decision-<n>``, n counting from 1, so ``-decision-10`` comes after ``-decision-2``."""
    name = str((decision.get("metadata") or {}).get("name") or "")
    found = _DECISION_INDEX.search(name)
    return (int(found.group(1)) if found else -1), name


def selected_clusters(decisions: Iterable[Mapping[str, Any]]) -> tuple[str, ...] | None:
    """The clusters a Placement selected, from its PlacementDecisions in OCM's page order; None while it has
    decided nothing."""
    ordered = sorted(decisions, key=decision_order)
    if not ordered:
        return None
    clusters: list[str] = []
    for decision in ordered:
        for entry in (decision.get("status") or {}).get("decisions") or []:
            name = entry.get("clusterName")
            if name and name not in clusters:
                clusters.append(name)
    return tuple(clusters)


def cluster_claims(managed_cluster: Mapping[str, Any]) -> dict[str, str]:
    """A ManagedCluster's ClusterClaims, name -> value."""
    claims = (managed_cluster.get("status") or {}).get("clusterClaims") or []
    return {c["name"]: str(c.get("value", "")) for c in claims if "name" in c}


def data_path(claims: Mapping[str, str], dataset: str) -> str | None:
    """Where ``dataset`` lies on a cluster, from its ``<dataset>.dataset.fleet.dev`` claim."""
    value = claims.get(dataset_claim(dataset))
    return value or None


def deployment_available(deployment: Mapping[str, Any] | None) -> bool:
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    return int(status.get("availableReplicas") or 0) >= 1


def collaborator_state(work: Mapping[str, Any] | None) -> tuple[bool, Problem | None]:
    """(available, problem) of the collaborator a ManifestWork carries: its status feedback and conditions.

    The feedback is what `objects.collaborator_work` asks of the SuperNode Deployment: its available replicas
    and its Progressing condition. A Pod that cannot start (an image that cannot be pulled, a missing Secret)
    shows on the Deployment only once its progress deadline passes: Progressing turns False with reason
    ProgressDeadlineExceeded and a message naming the ReplicaSet, never the Pod's waiting reason.
    """
    if work is None:
        return False, None
    status = work.get("status") or {}
    available = False
    texts: list[str] = []
    stalled = False
    for manifest in (status.get("resourceStatus") or {}).get("manifests") or []:
        if (manifest.get("resourceMeta") or {}).get("kind") != "Deployment":
            continue
        values = {
            v.get("name"): v.get("fieldValue") or {} for v in (manifest.get("statusFeedback") or {}).get("values") or []
        }
        replicas = values.get("AvailableReplicas", {}).get("integer")
        available = isinstance(replicas, int) and replicas >= 1
        reason = str(values.get(PROGRESSING_REASON, {}).get("string") or "")
        if reason == "ProgressDeadlineExceeded":
            stalled = True
            message = str(values.get(PROGRESSING_MESSAGE, {}).get("string") or "")
            texts.append(f"{reason}: {message}".rstrip(": "))
        texts += [
            f"{c.get('type')}: {c.get('message', '')}"
            for c in manifest.get("conditions") or []
            if c.get("status") == "False" and c.get("type") == "Applied"
        ]
    texts += [
        f"{c.get('type')}: {c.get('reason', '')}: {c.get('message', '')}"
        for c in status.get("conditions") or []
        if c.get("type") == "Applied" and c.get("status") == "False"
    ]
    if available or not texts:
        return available, None
    text = "; ".join(dict.fromkeys(texts))
    if stalled:
        return False, Problem(
            "CollaboratorNotStarting",
            f"the collaborator did not become available within {COLLABORATOR_PROGRESS_DEADLINE} s (check its "
            f"image and pull secret, and the add-on's client certificate Secret): {text}",
        )
    return False, Problem("CollaboratorNotApplied", f"the collaborator could not be applied: {text}")


def listener_statuses(
    spec: FederatedLearningSpec,
    job: JobRef,
    services: Mapping[str, Mapping[str, Any]],
    node_host: str = "",
) -> tuple[ListenerStatus, ...]:
    """Each listener with the address collaborators reach the SuperLink at ('' while not known yet)."""
    found = []
    for listener in spec.server.listeners:
        address = ""
        if listener.type is ListenerType.NODE_PORT:
            address = f"{node_host}:{listener.port}" if node_host else ""
        elif listener.type is ListenerType.LOAD_BALANCER and listener.host:
            address = f"{listener.host}:{listener.port}"  # the name published for it, whatever address it gets
        elif listener.type is ListenerType.LOAD_BALANCER:
            service = services.get(listener_name(job, listener)) or {}
            ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if ingress:
                host = ingress[0].get("hostname") or ingress[0].get("ip") or ""
                address = f"{host}:{listener.port}" if host else ""
        else:
            address = f"{listener.host}:443"
        found.append(ListenerStatus(name=listener.name, type=listener.type, port=listener.port, address=address))
    return tuple(found)


def aggregator_address(listeners: Iterable[ListenerStatus], job: JobRef) -> str:
    """The address collaborators dial: the first listener with a known address; the in-hub Service otherwise
    (which only collaborators inside the hub's network reach)."""
    for listener in listeners:
        if listener.address:
            return listener.address
    return internal_address(job)
