"""The base of every construct: one Kubernetes object with the project's labels and source annotation."""

from __future__ import annotations

from typing import Any

import cdk8s
from constructs import Construct

from fleet.hub import INSTANCE_LABEL, SOURCE_ANNOTATION
from render.charts.base import folder_of

PART_OF = "fleet"
MANAGED_BY = "fleet-render"


class HubObject(cdk8s.ApiObject):
    """A Kubernetes object whose whole body is built in Python.

    cdk8s keeps the object in its construct tree (ids, ordering, synthesis); the body is returned by `to_json`
    from Python rather than patched into the jsii object field by field: one Node round trip per object
    instead of several, which is what keeps a 5,000-object render fast.
    """

    def __init__(
        self,
        scope: Construct,
        *,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        component: str,
        instance: str,
        source: str,
        body: dict[str, Any],
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> None:
        construct_id = f"{kind}-{namespace}-{name}" if namespace else f"{kind}-{name}"
        folder = folder_of(scope)
        super().__init__(scope, construct_id, api_version=api_version, kind=kind, metadata={"name": name})
        folder.objects.append(self)
        metadata: dict[str, Any] = {"name": name}
        if namespace:
            metadata["namespace"] = namespace
        metadata["labels"] = {
            "app.kubernetes.io/name": kind.lower(),
            INSTANCE_LABEL: instance,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            **(labels or {}),
        }
        metadata["annotations"] = {SOURCE_ANNOTATION: source, **(annotations or {})}
        self.manifest: dict[str, Any] = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": metadata,
            **body,
        }

    def to_json(self) -> Any:
        return self.manifest
