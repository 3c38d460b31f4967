"""Placement: which managed clusters a job's collaborators run on."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from fleet.hub import POLICIES_ANNOTATION
from render.constructs.base import HubObject


class Placement(HubObject):
    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        spec: dict[str, Any],
        component: str,
        instance: str,
        source: str,
        policies: list[str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            scope,
            api_version="cluster.open-cluster-management.io/v1beta1",
            kind="Placement",
            name=name,
            namespace=namespace,
            component=component,
            instance=instance,
            source=source,
            body={"spec": spec},
            labels=labels,
            annotations={POLICIES_ANNOTATION: ",".join(policies)} if policies else None,
        )
