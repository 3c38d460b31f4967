"""A chart that is one folder of the output: each object in it becomes ``<folder>/<kind>-<name>.yaml``."""

from __future__ import annotations

from typing import Any

import cdk8s
from constructs import Construct


class FolderChart(cdk8s.Chart):
    def __init__(self, scope: Construct, folder: str) -> None:
        super().__init__(scope, folder.replace("/", "--"), disable_resource_name_hashes=True)
        self.folder = folder

    def path_for(self, body: dict[str, Any]) -> str:
        return f"{self.folder}/{body['kind'].lower()}-{body['metadata']['name']}.yaml"
