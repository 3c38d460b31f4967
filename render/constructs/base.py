"""The base of every construct: one Kubernetes object with the project's labels and source annotation."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from fleet.hub import INSTANCE_LABEL, SOURCE_ANNOTATION
from render.charts.base import folder_of

PART_OF = "fleet"
MANAGED_BY = "fleet-render"


class HubObject:
    """A Kubernetes object whose whole body is built in Python, kept by the folder chart it belongs to.

    The charts are cdk8s constructs, one jsii object per output folder; the objects in them are not: as a
    cdk8s ``ApiObject`` each one cost a round trip to Node (about 1.5 ms, half of a 1,000-job render) for a
    copy of its id and name that nothing read, since synthesis takes the bodies from Python. Its chart
    refuses a second object of the same id, as cdk8s did.
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
        folder_of(scope).add(construct_id, self)
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
