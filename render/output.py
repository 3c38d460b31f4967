"""Write rendered manifests as one file per resource, atomically, and compare them with what is committed.

The output tree is replaced as a whole: everything is written into a temporary sibling folder which is then
swapped in, so stale files disappear and a failed render leaves the previous tree untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # render.app starts Node for cdk8s; writing files needs none of it
    from render.app import Manifest

# The C emitter is ~5x faster; both emit the same bytes for what we write (a test checks this).
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Block style, insertion order, no line wrapping: output never depends on an emitter's width rules."""

    def ignore_aliases(self, data: Any) -> bool:
        # Constructs share sub-objects (label maps, security contexts); manifests spell each one out.
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text (scripts, CA bundles) as literal blocks, so diffs read line by line.
    style = "|" if "\n" in value and not value.endswith(" ") and "\r" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(body: Mapping[str, Any]) -> str:
    text: str = yaml.dump(
        dict(body),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=2**31 - 1,
        allow_unicode=True,
    )
    return text


def render_files(trees: Mapping[str, Iterable[Manifest]]) -> dict[str, str]:
    """``{target: manifests}`` -> ``{"<target>/<path>": yaml text}``."""
    return {f"{target}/{m.path}": to_yaml(m.body) for target, manifests in trees.items() for m in manifests}


MARKER = ".fleet-render"
"""The file by which `write_tree` knows a folder as its own: it replaces only such a folder, or an empty one."""

_MARKER_TEXT = "Written by `fleet render`, which replaces this folder as a whole: edit jobs/, clusters/, policies/.\n"


class FolderNotOwned(Exception):
    """The output folder holds something the renderer did not write: replacing it would lose that."""


def write_tree(files: Mapping[str, str], out: Path) -> None:
    """Replace the folder ``out`` with exactly ``files`` (relative path -> text), and the marker.

    Raises `FolderNotOwned`, writing nothing, when ``out`` holds anything but YAML files the renderer wrote: its
    marker and YAML files, or (a render from before the marker) only YAML files under the targets' folders.
    """
    out = out.resolve()
    foreign = _foreign_entries(out, {relative.split("/", 1)[0] for relative in files})
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FolderNotOwned(
            f"{out}: expected an empty folder or one that fleet render wrote (with its {MARKER}), "
            f"but it holds what fleet render did not write: {shown}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        for relative, text in {MARKER: _MARKER_TEXT, **files}.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
        staging.chmod(0o755)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.replace(retired / out.name)
            staging.replace(out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.replace(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _foreign_entries(out: Path, targets: set[str]) -> list[str]:
    """What under ``out`` the renderer did not write (relative paths, sorted); symbolic links are never its own."""
    if not out.exists():
        return []
    marked = (out / MARKER).is_file() and not (out / MARKER).is_symlink()
    foreign: list[str] = []
    for folder, names, filenames in os.walk(out):  # never descends into a linked folder
        for name in names + filenames:
            path = Path(folder) / name
            if path.is_dir() and not path.is_symlink():
                continue  # walked in turn
            relative = path.relative_to(out)
            if not _written_by_renderer(path, relative, marked, targets):
                foreign.append(relative.as_posix())
    return sorted(foreign)


def _written_by_renderer(path: Path, relative: Path, marked: bool, targets: set[str]) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    if relative.as_posix() == MARKER:
        return marked
    if not marked:  # a render from before the marker: YAML files in the targets' folders only
        return path.suffix == ".yaml" and len(relative.parts) > 1 and relative.parts[0] in targets
    return path.suffix == ".yaml"


def read_tree(out: Path) -> dict[str, str]:
    """Every file under ``out`` but the marker (relative path -> text); empty when the folder does not exist."""
    if not out.is_dir():
        return {}
    return {
        path.relative_to(out).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.relative_to(out).as_posix() != MARKER
    }


def stale_files(files: Mapping[str, str], out: Path) -> list[str]:
    """The paths that differ between a fresh render and the tree at ``out``: changed, missing or extra."""
    committed = read_tree(out)
    return sorted(path for path in set(files) | set(committed) if files.get(path) != committed.get(path))
