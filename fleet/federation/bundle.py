"""The sources of the Flower app bundle (FAB) that every run submits, locally and on the hub.

Fleet's app is the ``fleet.app`` package alone (plus ``fleet/__init__.py``) with fleet/app/pyproject.toml as
its manifest: its import path stays clear of the renderer and the rest of ``fleet``, and a small FAB installs
fast.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

COMPONENTS = ("serverapp", "clientapp")
_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class AppError(ValueError):
    """An app folder Flower could not build a FAB from; the message names the file and the field."""


_PACKAGE = Path(__file__).resolve().parent.parent  # the `fleet` package


def stage_app(into: Path, app: Path | None = None) -> Path:
    """Copy the app's Python files and its pyproject.toml into ``into`` (created); ``app``: another app's
    folder instead of fleet's own. Returns ``into``, ready for Flower to build the FAB from.

    Raises `AppError` when ``app`` has no usable manifest.
    """
    if app is not None:
        components(app)
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


def components(app: Path) -> dict[str, str]:
    """The ``module:attribute`` references of the app's ServerApp and ClientApp, from its ``pyproject.toml``
    (``[tool.flwr.app.components]``). Raises `AppError` naming the file and the field."""
    manifest = app / "pyproject.toml"
    try:
        document = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except OSError as error:
        raise AppError(f"{manifest}: cannot read the app's manifest: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise AppError(f"{manifest}: not valid TOML: {error}") from None
    section: object = document
    for key in ("tool", "flwr", "app", "components"):
        section = section.get(key) if isinstance(section, dict) else None
    found: dict[str, str] = {}
    for name in COMPONENTS:
        reference = section.get(name) if isinstance(section, dict) else None
        if not isinstance(reference, str) or not _REFERENCE.match(reference):
            got = "it is missing" if reference is None else f"got {reference!r}"
            raise AppError(
                f"{manifest}: tool.flwr.app.components.{name}: expected a 'module:attribute' reference, {got}"
            )
        found[name] = reference
    return found
