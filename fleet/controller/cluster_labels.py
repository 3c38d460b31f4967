"""Cluster labels from Git: each ManagedClusterLabels object's labels and cluster set, server-side applied to the
ManagedCluster of the same name under the controller's own field manager, and removed when the object goes.

Why a controller, not a partial ManagedCluster in Git: a GitOps tool can own fields of an object only while it
applies that object, and it must never prune a ManagedCluster (deleting one detaches the spoke). So the labels
Git applied would outlive their ``clusters/`` file. A ManagedClusterLabels object is an ordinary object that
Argo CD and Flux apply and prune; the controller turns its presence into an apply of exactly its labels
under `LABELS_FIELD_MANAGER`, and its deletion (a finalizer) into an apply of no labels under that manager, which
makes the API server remove exactly the fields that manager owned (Kubernetes docs, "Server-Side Apply": a field removed
from a manager's applied configuration is removed when no other manager owns it). Labels other managers set
(by hand, OCM's registration and add-on managers) are never named, so never touched; nothing here deletes,
creates or replaces a ManagedCluster, and only its ``metadata.labels`` are ever sent (to a ManagedCluster seen
registered: an apply would create a missing one).

A sweep covers what the finalizer cannot: on every ManagedCluster event (the initial listing included, so at each
start), a cluster whose managedFields show `LABELS_FIELD_MANAGER` owning labels but that no ManagedClusterLabels
declares (its finalizer removed by hand, the object deleted while the controller was away) gets the empty apply.
A cluster declared before it registers is labelled when its ManagedCluster appears (registration creates it).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from fleet.claims import API_GROUP
from fleet.crd import LABELS_KIND, LABELS_PLURAL, VERSION
from fleet.hub_state import LABELS_FIELD_MANAGER, owned_labels
from fleet.models import ManagedClusterLabelsSpec
from fleet.placement import CLUSTER_SET_LABEL

from .hub import ApiError, HubClient, TransientError
from .objects import MANAGED_CLUSTER, Kind

logger = logging.getLogger("fleet.controller.cluster_labels")

MANAGED_CLUSTER_LABELS = Kind(API_GROUP, VERSION, LABELS_PLURAL, LABELS_KIND, namespaced=False)

_DECLARATIONS = "cluster_label_declarations"
_CLUSTERS = "cluster_label_targets"


def desired_labels(spec: Mapping[str, Any]) -> dict[str, str]:
    """The labels a ManagedClusterLabels spec makes true: its labels and the cluster-set label."""
    parsed = ManagedClusterLabelsSpec.model_validate(spec)
    return {**dict(sorted(parsed.labels.items())), CLUSTER_SET_LABEL: parsed.cluster_set}


def apply_configuration(cluster: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The apply configuration the controller sends: the ManagedCluster's name and exactly ``labels``."""
    metadata: dict[str, Any] = {"name": cluster}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": MANAGED_CLUSTER.api_version, "kind": MANAGED_CLUSTER.kind, "metadata": metadata}


_Registered = Mapping[str, Any]
"""A ManagedCluster as the controller's index holds it: its ``labels`` and the label keys it ``owned``."""


def carries(managed_cluster: _Registered | None, labels: Mapping[str, str]) -> bool:
    """Whether a ManagedCluster has exactly ``labels`` from `LABELS_FIELD_MANAGER`: nothing to apply."""
    if managed_cluster is None:
        return False
    have = managed_cluster.get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items()) and set(managed_cluster.get("owned") or ()) == set(labels)


class ClusterLabeler:
    """The hub writes of cluster labels: applies, removals, the declaring object's status."""

    def __init__(
        self,
        hub: HubClient,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.hub = hub
        self.clock = clock

    def label(self, declaration: Mapping[str, Any], managed_cluster: _Registered | None) -> None:
        """Apply the declaration's labels to its ManagedCluster (when registered, and unless it carries them
        under `LABELS_FIELD_MANAGER` already) and report it in the status.

        Forced: a key Git declares is Git's, also when someone set it by hand (how Git takes a cluster from
        OCM's ``default`` set)."""
        name = str(declaration["metadata"]["name"])
        try:
            labels = desired_labels(declaration.get("spec") or {})
        except ValidationError as error:  # the CRD cannot check label keys (a map's keys): the model does
            problems = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            # What an earlier, valid spec applied stays on the ManagedCluster (the object still declares the
            # cluster, so the sweep keeps it): the status says so rather than claim none.
            kept = dict((declaration.get("status") or {}).get("appliedLabels") or {})
            message = f"invalid spec, nothing new applied ({len(kept)} label(s) applied before are kept): {problems}"
            self._status(declaration, kept, "False", "Refused", message)
            return
        if managed_cluster is None:
            message = (
                f"no ManagedCluster {name} on the hub yet: its labels are applied once its klusterlet registers "
                f"(clusteradm join) and a hub administrator accepts it (clusteradm accept --clusters {name})"
            )
            self._status(declaration, {}, "False", "NotRegistered", message)
            return
        if not carries(managed_cluster, labels):
            try:
                self.hub.server_side_apply(
                    MANAGED_CLUSTER, apply_configuration(name, labels), field_manager=LABELS_FIELD_MANAGER, force=True
                )
            except TransientError:
                raise
            except ApiError as error:  # forbidden (no managedclustersets/join), invalid: said in the status
                self._status(declaration, {}, "False", "Refused", f"the hub refused the labels: {error}")
                raise
        self._status(
            declaration, labels, "True", "Applied", f"{len(labels)} label(s) applied by {LABELS_FIELD_MANAGER}"
        )

    def unlabel(self, cluster: str) -> bool:
        """Remove every label `LABELS_FIELD_MANAGER` owns on the ManagedCluster, and only those: an apply of none.
        Only for a ManagedCluster seen registered (an apply creates what does not exist); False when it went
        meanwhile."""
        try:
            self.hub.server_side_apply(
                MANAGED_CLUSTER, apply_configuration(cluster, {}), field_manager=LABELS_FIELD_MANAGER, force=False
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def _status(
        self, declaration: Mapping[str, Any], applied: Mapping[str, str], status: str, reason: str, message: str
    ) -> None:
        metadata = declaration["metadata"]
        old = declaration.get("status") or {}
        previous = next((c for c in old.get("conditions") or [] if c.get("type") == "Applied"), None)
        same = previous is not None and previous.get("status") == status and previous.get("reason") == reason
        condition = {
            "type": "Applied",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": (
                previous["lastTransitionTime"] if same and previous else self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
        }
        new = {
            "observedGeneration": int(metadata.get("generation") or 0),
            "appliedLabels": dict(applied),
            "conditions": [condition],
        }
        if {k: old.get(k) for k in new} == new:
            return
        # A merge patch keeps a map's keys it does not name: a label no longer applied is named with null.
        gone = {key: None for key in old.get("appliedLabels") or {} if key not in applied}
        patch = {**new, "appliedLabels": {**gone, **applied}}
        self.hub.patch(MANAGED_CLUSTER_LABELS, "", str(metadata["name"]), {"status": patch}, status=True)


def register_cluster_labels(registry: kopf.OperatorRegistry, hub: HubClient) -> None:
    """The handlers of cluster labels, in the operator's registry."""
    labeler = ClusterLabeler(hub)
    declarations = (MANAGED_CLUSTER_LABELS.group, MANAGED_CLUSTER_LABELS.version, MANAGED_CLUSTER_LABELS.plural)
    clusters = (MANAGED_CLUSTER.group, MANAGED_CLUSTER.version, MANAGED_CLUSTER.plural)

    @kopf.index(*declarations, id=_DECLARATIONS, registry=registry)
    def declared(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {name: _slim(body)}

    @kopf.index(*clusters, id=_CLUSTERS, registry=registry)
    def registered(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {name: _registered(body)}  # whether it exists (an apply would create it), and what it carries

    @kopf.on.resume(*declarations, registry=registry)
    @kopf.on.create(*declarations, registry=registry)
    @kopf.on.update(*declarations, field="spec", registry=registry)
    async def changed(name: str, body: kopf.Body, retry: int, **kwargs: Any) -> None:
        live = _one(kwargs[_CLUSTERS], name)
        try:
            await asyncio.to_thread(labeler.label, body, live)
        except ApiError as error:
            raise kopf.TemporaryError(str(error), delay=min(60.0, 2.0 ** min(retry, 6))) from error

    @kopf.on.delete(*declarations, registry=registry)
    async def removed(name: str, retry: int, **kwargs: Any) -> None:
        if _one(kwargs[_CLUSTERS], name) is None:
            return  # no ManagedCluster, no labels; an apply would create a bare one
        try:
            await asyncio.to_thread(labeler.unlabel, name)
        except ApiError as error:  # the finalizer stays until the labels are gone
            raise kopf.TemporaryError(str(error), delay=min(60.0, 2.0 ** min(retry, 6))) from error

    @kopf.on.event(*clusters, registry=registry)
    async def cluster_seen(name: str, body: kopf.Body, type: str | None, **kwargs: Any) -> None:
        if type == "DELETED":
            return
        declaration = _one(kwargs[_DECLARATIONS], name)
        try:
            if declaration is None or (declaration.get("metadata") or {}).get("deletionTimestamp"):
                if declaration is None and owned_labels(body):  # the sweep: labelled by us, declared by nobody
                    logger.info(
                        "%s: no ManagedClusterLabels declares it; removing the labels of %s", name, LABELS_FIELD_MANAGER
                    )
                    await asyncio.to_thread(labeler.unlabel, name)
                return
            try:
                want = desired_labels(declaration.get("spec") or {})
            except ValidationError:  # its status says why (`ClusterLabeler.label`)
                return
            live = _registered(body)
            if not carries(live, want):
                await asyncio.to_thread(labeler.label, declaration, live)
        except ApiError as error:  # kopf retries no event handler: the cluster's next event does
            logger.warning("labelling ManagedCluster %s: %s", name, error)


def _registered(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"labels": dict((body.get("metadata") or {}).get("labels") or {}), "owned": owned_labels(body)}


def _slim(body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata") or {}
    return {
        "metadata": {k: metadata[k] for k in ("name", "generation", "deletionTimestamp") if k in metadata},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def _one(index: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    for value in index.get(name, ()):
        return dict(value)
    return None
