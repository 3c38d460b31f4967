"""OCM's work agent, as far as the controller depends on it: the status a ManifestWork gets once the agent has
applied its manifests, with status feedback read from objects shaped as the spoke's API server returns them.

The rules, from open-cluster-management-io/ocm:
- ``pkg/work/spoke/statusfeedback/reader.go``: a JSONPath rule is parsed as ``{<path>}`` and evaluated with
  ``FindResults(obj.UnstructuredContent())``, from the object's root; missing keys are allowed (no value, no
  error); one int64, string or bool result becomes an Integer, String or Boolean value, anything else no value
  (raw JSON is behind a feature gate, off by default).
- ``pkg/work/spoke/statusfeedback/rules/rule.go``: WellKnownStatus of an ``apps/v1`` Deployment is
  ReadyReplicas, Replicas and AvailableReplicas (``.status.readyReplicas`` ...).
- Feedback is reported only for the work's own manifests that a ``manifestConfigs`` resourceIdentifier names
  (group, resource, namespace, name).

Kubernetes' JSONPath ``.a.b`` is jsonpath-ng's ``$.a.b``; both read filters as ``[?(@.type=="X")]``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from jsonpath_ng.ext.parser import parse

_WELL_KNOWN = {
    ("apps", "Deployment"): [
        ("ReadyReplicas", ".status.readyReplicas"),
        ("Replicas", ".status.replicas"),
        ("AvailableReplicas", ".status.availableReplicas"),
    ],
    ("", "Pod"): [("PodReady", '.status.conditions[?(@.type=="Ready")].status'), ("PodPhase", ".status.phase")],
}


def feedback_value(obj: Mapping[str, Any], name: str, path: str) -> dict[str, Any] | None:
    """One feedback value as the work agent reports it, or None where it reports none."""
    found = [match.value for match in parse("$" + path).find(obj)]
    if len(found) != 1:
        return None  # nothing found, or a list (raw JSON, off by default)
    value = found[0]
    if isinstance(value, bool):
        return {"name": name, "fieldValue": {"type": "Boolean", "boolean": value}}
    if isinstance(value, int):
        return {"name": name, "fieldValue": {"type": "Integer", "integer": value}}
    if isinstance(value, str):
        return {"name": name, "fieldValue": {"type": "String", "string": value}}
    return None


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _resource(kind: str) -> str:
    return kind.lower() + "s"


def work_status(work: Mapping[str, Any], served: Mapping[tuple[str, str], Mapping[str, Any]]) -> dict[str, Any]:
    """The ManifestWork's status once every manifest is applied: ``served`` holds the applied objects as the
    spoke's API server returns them, by (kind, name); manifests missing from it have no feedback."""
    applied = {
        "type": "Applied",
        "status": "True",
        "reason": "AppliedManifestComplete",
        "message": "Apply manifest complete",
        "lastTransitionTime": "2026-01-01T00:00:05Z",
    }
    available = {**applied, "type": "Available", "reason": "ResourceAvailable", "message": "Resource is available"}
    configs = (work.get("spec") or {}).get("manifestConfigs") or []
    manifests = []
    for ordinal, manifest in enumerate(work["spec"]["workload"]["manifests"]):
        group, version = _group_version(manifest["apiVersion"])
        metadata = manifest["metadata"]
        meta = {
            "ordinal": ordinal,
            "group": group,
            "version": version,
            "kind": manifest["kind"],
            "resource": _resource(manifest["kind"]),
            "namespace": metadata.get("namespace", ""),
            "name": metadata["name"],
        }
        entry: dict[str, Any] = {"resourceMeta": meta, "conditions": [applied, available], "statusFeedback": {}}
        obj = served.get((manifest["kind"], metadata["name"]))
        for config in configs:
            identifier = config["resourceIdentifier"]
            named = (identifier.get("group", ""), identifier["resource"], identifier.get("namespace", ""))
            if obj is None or (*named, identifier["name"]) != (
                group,
                meta["resource"],
                meta["namespace"],
                meta["name"],
            ):
                continue
            values = []
            for rule in config.get("feedbackRules") or []:
                if rule["type"] == "WellKnownStatus":
                    paths = _WELL_KNOWN.get((group, manifest["kind"]), [])
                else:
                    paths = [(p["name"], p["path"]) for p in rule.get("jsonPaths") or []]
                values += [v for n, p in paths if (v := feedback_value(obj, n, p)) is not None]
            entry["statusFeedback"] = {"values": values}
            synced = {**applied, "type": "StatusFeedbackSynced", "reason": "StatusFeedbackSynced", "message": ""}
            entry["conditions"] = [applied, available, synced]
        manifests.append(entry)
    return {"conditions": [applied, available], "resourceStatus": {"manifests": manifests}}


def served_deployment(
    manifest: Mapping[str, Any], *, available: int, progressing: tuple[str, str, str] | None = None
) -> dict[str, Any]:
    """A Deployment as the API server returns it, its Deployment controller having acted on it: the manifest with
    server fields and defaults, and a status whose zero counts are omitted (``omitempty``, k8s.io/api
    ``apps/v1`` DeploymentStatus). ``progressing``: (status, reason, message) of its Progressing condition,
    NewReplicaSetAvailable by default."""
    obj = copy.deepcopy(dict(manifest))
    name = obj["metadata"]["name"]
    obj["metadata"].update({"uid": "5b0c7e52-8a4b-4b5e-9d6e-0c1f2a3b4c5d", "resourceVersion": "4711", "generation": 1})
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:01Z"
    spec = obj["spec"]
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    replicas = int(spec.get("replicas", 1))
    status: dict[str, Any] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas}
    if available:
        status.update(readyReplicas=available, availableReplicas=available)
    if replicas - available:
        status["unavailableReplicas"] = replicas - available
    replica_set = f"{name}-6d4cf56db6"
    progress = progressing or (
        "True",
        "NewReplicaSetAvailable",
        f'ReplicaSet "{replica_set}" has successfully progressed.',
    )
    at = "2026-01-01T00:00:02Z"
    status["conditions"] = [
        {
            "type": "Available",
            "status": "True" if available else "False",
            "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "message": "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
            "lastUpdateTime": at,
            "lastTransitionTime": at,
        },
        {
            "type": "Progressing",
            "status": progress[0],
            "reason": progress[1],
            "message": progress[2],
            "lastUpdateTime": at,
            "lastTransitionTime": at,
        },
    ]
    obj["status"] = status
    return obj


def deadline_exceeded(name: str) -> tuple[str, str, str]:
    """The Progressing condition of a Deployment whose Pod never started before its progress deadline (the
    Deployment controller's message names the ReplicaSet, never the Pod's waiting reason)."""
    return ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{name}-6d4cf56db6" has timed out progressing.')


def collaborator_status(
    work: Mapping[str, Any], available: int, progressing: tuple[str, str, str] | None = None
) -> dict[str, Any]:
    """The status the work agent reports for a collaborator ManifestWork: its SuperNode Deployment served with
    ``available`` replicas (and ``progressing``)."""
    deployment = next(m for m in work["spec"]["workload"]["manifests"] if m["kind"] == "Deployment")
    served = served_deployment(deployment, available=available, progressing=progressing)
    return work_status(work, {("Deployment", deployment["metadata"]["name"]): served})
