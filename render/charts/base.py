"""The app and its charts, each chart one folder of the output: each object in it becomes
``<folder>/<kind>-<name>.yaml``.

Both keep, on the Python side, what was added to them (charts in order, objects in order): synthesis reads
those lists instead of asking Node for ``app.charts`` and every chart's ``node.children``, three round trips
per folder that a 1,000-job render would pay some 5,000 times. The objects are Python only
(`render.constructs.base.HubObject`): Node holds the app and one chart per folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cdk8s
from constructs import Construct

if TYPE_CHECKING:
    from render.constructs.base import HubObject


class FleetApp(cdk8s.App):
    def __init__(self) -> None:
        super().__init__()
        self.folders: list[FolderChart] = []


class FolderChart(cdk8s.Chart):
    def __init__(self, scope: FleetApp, folder: str) -> None:
        super().__init__(scope, folder.replace("/", "--"), disable_resource_name_hashes=True)
        self.folder = folder
        self.objects: list[HubObject] = []
        self._ids: set[str] = set()
        scope.folders.append(self)

    def add(self, construct_id: str, hub_object: HubObject) -> None:
        """Keep ``hub_object``, in order; an id already in this chart is refused, as cdk8s refuses one."""
        if construct_id in self._ids:
            raise ValueError(f"there is already an object with id {construct_id!r} in the chart of {self.folder}")
        self._ids.add(construct_id)
        self.objects.append(hub_object)

    def path_for(self, body: dict[str, Any]) -> str:
        return f"{self.folder}/{body['kind'].lower()}-{body['metadata']['name']}.yaml"


def folder_of(scope: Construct) -> FolderChart:
    if not isinstance(scope, FolderChart):
        raise TypeError(f"a hub object belongs directly to a FolderChart, not to {type(scope).__name__}")
    return scope
