"""Write rendered manifests as one file per resource, atomically, and compare them with what is committed.

The output tree is replaced as a whole: everything is written into a temporary sibling folder which is then
swapped in, so stale files disappear and a failed render leaves the previous tree untouched.
"""

from __future__ import annotations

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


def write_tree(files: Mapping[str, str], out: Path) -> None:
    """Replace the folder ``out`` with exactly ``files`` (relative path -> text)."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        for relative, text in files.items():
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


def read_tree(out: Path) -> dict[str, str]:
    """Every file under ``out`` (relative path -> text); empty when the folder does not exist."""
    if not out.is_dir():
        return {}
    return {
        path.relative_to(out).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(out.rglob("*"))
        if path.is_file()
    }


def stale_files(files: Mapping[str, str], out: Path) -> list[str]:
    """The paths that differ between a fresh render and the tree at ``out``: changed, missing or extra."""
    committed = read_tree(out)
    return sorted(path for path in set(files) | set(committed) if files.get(path) != committed.get(path))
