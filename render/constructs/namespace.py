"""Namespace: where a job's hub objects live."""

from __future__ import annotations

from constructs import Construct

from render.constructs.base import HubObject


class Namespace(HubObject):
    def __init__(self, scope: Construct, *, name: str, component: str, source: str) -> None:
        super().__init__(
            scope,
            api_version="v1",
            kind="Namespace",
            name=name,
            component=component,
            instance=name,
            source=source,
            body={},
        )
