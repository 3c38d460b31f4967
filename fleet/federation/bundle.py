"""The sources of the Flower app bundle (FAB) that every run submits, locally and on the hub.

Fleet's app is the ``fleet.app`` package alone (plus ``fleet/__init__.py``) with fleet/app/pyproject.toml as
its manifest: its import path stays clear of the renderer and the rest of ``fleet``, and a small FAB installs
fast.
"""

from __future__ import annotations

import shutil
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # the `fleet` package


def stage_app(into: Path, app: Path | None = None) -> Path:
    """Copy the app's Python files and its pyproject.toml into ``into`` (created); ``app``: another app's
    folder instead of fleet's own. Returns ``into``, ready for Flower to build the FAB from."""
    if app is None:
        sources = [_PACKAGE / "__init__.py", *(_PACKAGE / "app").rglob("*.py")]
        base, target_root, manifest = _PACKAGE, into / "fleet", _PACKAGE / "app" / "pyproject.toml"
    else:
        sources = list(app.rglob("*.py"))
        base, target_root, manifest = app, into, app / "pyproject.toml"
    for source in sorted(sources):
        if "__pycache__" in source.parts:
            continue
        target = target_root / source.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    shutil.copy2(manifest, into / "pyproject.toml")
    return into
