"""The mock hub with Kubernetes' server-side apply of ``metadata.labels`` on ManagedClusters, and the field
ownership that goes with it (``metadata.managedFields``), as the Kubernetes documentation states the rules
(kubernetes.io/docs/reference/using-api/server-side-apply/, "Field management", "Conflicts", "Merge strategy"):

- every field is owned by the managers that set it; an apply (``application/apply-patch+yaml`` with
  ``?fieldManager=``) is recorded as that manager's ``Apply`` entry, any other write (a create, a merge patch) as
  that manager's ``Update`` entry (the manager from ``?fieldManager=``, else the request's User-Agent);
- an apply that sets a field another manager owns to a different value is a 409 conflict unless forced
  (``?force=true``), which takes the field away from the others; the same value is shared ownership;
- a field the applier owned and no longer names leaves its ownership, and is removed when no manager owns it;
- an update that changes a field takes it from every other manager;
- an apply to an object that does not exist creates it.

Only labels are modelled (``metadata.labels`` is a granular map, each key a field of its own): that is all the
controller applies. `tests/fleet/controller/test_cluster_labels_ssa.py` checks these rules one by one.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import kmock

from .operator_support import ApiServer

MANAGED_CLUSTERS = kmock.resource("cluster.open-cluster-management.io", "v1", "managedclusters")
APPLY = "application/apply-patch+yaml"
_Owner = tuple[str, str]
"""(manager, operation)."""


class Conflict(Exception):
    def __init__(self, fields: dict[str, list[str]]) -> None:
        listed = "; ".join(
            f'conflict with "{", ".join(managers)}": .metadata.labels.{key}' for key, managers in fields.items()
        )
        super().__init__(f"Apply failed with {len(fields)} conflict(s): {listed}")


def owners_of(obj: dict[str, Any]) -> dict[str, set[_Owner]]:
    """Label key -> the (manager, operation) pairs whose managedFields entry holds it."""
    owners: dict[str, set[_Owner]] = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        labels = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        for key in labels:
            owners.setdefault(key.removeprefix("f:"), set()).add((entry["manager"], entry["operation"]))
    return owners


def managed_fields(owners: dict[str, set[_Owner]], api_version: str) -> list[dict[str, Any]]:
    entries: dict[_Owner, list[str]] = {}
    for key, who in sorted(owners.items()):
        for owner in sorted(who):
            entries.setdefault(owner, []).append(key)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        {
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {f"f:{key}": {} for key in keys}}},
        }
        for (manager, operation), keys in sorted(entries.items())
    ]


def apply_labels(
    obj: dict[str, Any] | None, config: dict[str, Any], manager: str, *, force: bool
) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
    """An apply of ``config``'s labels by ``manager`` to ``obj`` (None: none yet): the label changes (None
    removes a key) and the new managedFields. Raises `Conflict`."""
    have: dict[str, str] = dict(((obj or {}).get("metadata") or {}).get("labels") or {})
    owners = owners_of(obj or {})
    want: dict[str, str] = dict((config.get("metadata") or {}).get("labels") or {})
    me = (manager, "Apply")
    conflicts = {
        key: sorted(m for m, _ in owners.get(key, set()) - {me})
        for key, value in want.items()
        if key in have and have[key] != value and owners.get(key, set()) - {me}
    }
    if conflicts and not force:
        raise Conflict(conflicts)
    changes: dict[str, str | None] = {}
    for key, value in want.items():
        if key in conflicts:
            owners[key] = set()  # forced: the others lose the field
        owners.setdefault(key, set()).add(me)
        if have.get(key) != value:
            changes[key] = value
    for key in [k for k, who in owners.items() if me in who and k not in want]:
        owners[key].discard(me)
        if not owners[key]:
            del owners[key]
            if key in have:
                changes[key] = None
    return changes, managed_fields(owners, str(config.get("apiVersion", "")))


def update_labels(obj: dict[str, Any] | None, labels: dict[str, str | None], manager: str) -> list[dict[str, Any]]:
    """The managedFields after an update (create, merge patch) by ``manager`` that writes ``labels``."""
    have: dict[str, str] = dict(((obj or {}).get("metadata") or {}).get("labels") or {})
    owners = owners_of(obj or {})
    for key, value in labels.items():
        if value is None:
            owners.pop(key, None)
        elif have.get(key) != value or key not in owners:
            owners[key] = {(manager, "Update")}
    return managed_fields(owners, str((obj or {}).get("apiVersion", "cluster.open-cluster-management.io/v1")))


class SsaApiServer(ApiServer):
    """The operator tests' API server, with server-side apply of ManagedClusters' labels."""

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource == MANAGED_CLUSTERS and request.subresource is None:
            try:
                request = self._field_managed(request)
            except Conflict as error:
                return _status(409, "Conflict", str(error))
        return await super()._handle(request)

    def _field_managed(self, request: kmock.Request) -> kmock.Request:
        manager = request.params.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
        content_type = request.headers.get("Content-Type", "").split(";")[0]
        if request.method == kmock.method.PATCH and content_type == APPLY:
            config = json.loads(request.text)
            current = self._current(request.name)
            changes, fields = apply_labels(current, config, manager, force=request.params.get("force") == "true")
            if current is None:  # Kubernetes creates what an apply names when it does not exist
                labels = {k: v for k, v in changes.items() if v is not None}
                created = {**config, "metadata": {**config["metadata"], "labels": labels, "managedFields": fields}}
                return _rewritten(request, created, kmock.action.CREATE)
            return _rewritten(request, {"metadata": {"labels": changes, "managedFields": fields}})
        if request.method in (kmock.method.POST, kmock.method.PATCH) and isinstance(request.data, dict):
            written: dict[str, str | None] = (request.data.get("metadata") or {}).get("labels") or {}
            if written:
                current = self._current(request.name) if request.method == kmock.method.PATCH else None
                data = {**request.data, "metadata": {**request.data["metadata"]}}
                data["metadata"]["managedFields"] = update_labels(current, written, manager)
                return _rewritten(request, data)
        return request

    def _current(self, name: str | None) -> dict[str, Any] | None:
        for (resource, _, obj_name), obj in list(self.objects.items()):
            if resource == MANAGED_CLUSTERS and obj_name == name and not obj.deleted:
                return dict(obj.raw)
        return None


def _rewritten(request: kmock.Request, data: dict[str, Any], action: Any = None) -> kmock.Request:
    """The request, carrying what the API server stores for it. In place: kmock routes a request by identity
    (its recorded request list), and the recorded one keeps its original body for the tests to read."""
    object.__setattr__(request, "data", data)
    if action is not None:
        object.__setattr__(request, "action", action)
    return request


def _status(code: int, reason: str, message: str) -> Any:
    import aiohttp.web

    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return aiohttp.web.json_response(body, status=code)
