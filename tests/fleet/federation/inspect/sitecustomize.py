"""Loaded at start by every Python process of a `fleet run` whose PYTHONPATH names this folder (the test sets it):
records what the ServerApp receives and what each ClientApp trained, into ``$FLEET_TEST_INSPECT_DIR``.

- the ServerApp side: every Message its Grid (Flower's ``HttpGrid``) pulls, as it arrived: each array of each
  ArrayRecord (a packed one, `fleet.app.packing`, as the tensors its bytes carry), and each bytes value of each
  ConfigRecord (where SecAgg+ carries its masked vectors);
- the collaborator side: the model ``fleet.app.task.train`` leaves after local training (the update in clear).

Modules are patched as they are imported (a meta-path hook), so processes that never import them pay nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import pickle
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

_DIR = os.environ.get("FLEET_TEST_INSPECT_DIR")


def _save(kind: str, record: dict[str, Any]) -> None:
    assert _DIR is not None
    path = Path(_DIR) / f"{kind}-{os.getpid()}-{uuid.uuid4().hex}.pickle"
    path.write_bytes(pickle.dumps(record))


def _patch_grid(module: ModuleType) -> None:
    original = module.HttpGrid.pull_messages

    def pull_messages(self: Any, message_ids: Any) -> Any:
        from fleet.app.packing import unpack

        messages = list(original(self, message_ids))
        for message in messages:
            if message.has_error():
                continue
            content = unpack(message.content)
            _save(
                "server",
                {
                    "type": message.metadata.message_type,
                    "arrays": {
                        name: [array.numpy() for array in record.values()]
                        for name, record in content.array_records.items()
                    },
                    "bytes": [
                        item
                        for record in content.config_records.values()
                        for value in record.values()
                        for item in (value if isinstance(value, list) else [value])
                        if isinstance(item, bytes)
                    ],
                },
            )
        return messages

    module.HttpGrid.pull_messages = pull_messages


def _patch_train(module: ModuleType) -> None:
    original = module.train

    def train(model: Any, *args: Any, **kwargs: Any) -> Any:
        loss = original(model, *args, **kwargs)
        _save("client", {"arrays": [value.detach().cpu().numpy().copy() for value in model.state_dict().values()]})
        return loss

    module.train = train
    client_app = sys.modules.get("fleet.app.client_app")
    if client_app is not None:  # imported `train` by name before this patch: rebind it there too
        client_app.train = train  # type: ignore[attr-defined]


_PATCHES = {"flwr.superlink.grid.http_grid": _patch_grid, "fleet.app.task": _patch_train}


class _Loader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader, patch: Any) -> None:
        self._wrapped, self._patch = wrapped, patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._wrapped.exec_module(module)
        self._patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in _PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target)  # type: ignore[attr-defined]
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, _PATCHES[name])
                return spec
        return None


if _DIR:
    sys.meta_path.insert(0, _Finder())
