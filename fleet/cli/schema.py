"""``fleet schema``: write the JSON Schemas of the kinds people write, or check the committed ones."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from fleet.schemas import definition_schemas, dumps

EXIT_STALE = 1
"""Exit code of ``--check`` when a committed schema differs from the models (not bad input: a stale file)."""


@click.command(name="schema")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Folder of the schema files.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when a schema file is missing or stale.")
def command(out_dir: Path, check: bool) -> None:
    """Generate the JSON Schemas (draft 2020-12) of Job, Cluster and DataLocalityPolicy from the models."""
    expected = {name: dumps(schema) for name, schema in definition_schemas().items()}
    if check:
        stale = [name for name, text in expected.items() if _read(out_dir / name) != text]
        for name in stale:
            click.echo(f"{out_dir / name}: stale or missing; run `fleet schema --out {out_dir}`", err=True)
        if stale:
            raise SystemExit(EXIT_STALE)
        click.echo(f"{len(expected)} schemas in {out_dir} are up to date")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in expected.items():
        if _read(out_dir / name) != text:
            _write_atomically(out_dir / name, text)
            click.echo(f"wrote {out_dir / name}")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, text: str) -> None:
    # A reader (an editor, a concurrent test) sees the old file or the new one, never half of one.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        Path(temporary).chmod(0o644)  # mkstemp creates 0600; a schema is for everyone to read
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
