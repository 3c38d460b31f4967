"""``fleet schema``: write the JSON Schemas of the kinds people write, or check the committed ones."""

from __future__ import annotations

from pathlib import Path

import click

from fleet.app.files import write_text_atomically
from fleet.cli._options import OutputFolder
from fleet.schemas import definition_schemas, dumps

EXIT_STALE = 1
"""Exit code of ``--check`` when a committed schema differs from the models (not bad input: a stale file)."""


@click.command(name="schema")
@click.option(
    "--out",
    "out_dir",
    type=OutputFolder(),
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
            write_text_atomically(out_dir / name, text)
            click.echo(f"wrote {out_dir / name}")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
