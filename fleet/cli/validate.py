"""``fleet validate [PATHS...]``: check rendered manifests strictly against their schemas, offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fleet.errors import EXIT_INVALID

EXIT_FAILED = 1
"""Some resource is invalid, or could not be validated (an apiVersion not served, no kind, no schema)."""


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--crds",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of upstream CustomResourceDefinitions [default: $FLEET_CRDS_DIR, else ../shared/crds].",
)
@click.option(
    "--ignore-missing-schemas",
    is_flag=True,
    help="Report a kind with no schema anywhere as skipped and exit 0 for it (as kubeconform's flag).",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(paths: tuple[Path, ...], crds: Path | None, ignore_missing_schemas: bool, output: str) -> None:
    """Validate Kubernetes manifests (files or folders; default: manifests/) strictly.

    Custom kinds are checked against their CustomResourceDefinitions (those in the CRD folder and any among
    the manifests), core kinds against Kubernetes' own schemas; an undeclared field is an error. Exits 0 when
    every resource is valid, 1 when one is invalid or could not be validated (a kind with no schema anywhere
    too, unless --ignore-missing-schemas), 2 on bad input.
    """
    from fleet.validation import ManifestError, Status, default_crds_dir, load_manifests, validate_documents

    try:
        documents = load_manifests(paths or (Path("manifests"),))
        report = validate_documents(documents, default_crds_dir(Path.cwd(), crds))
    except ManifestError as error:
        click.echo(f"fleet validate: {error}", err=True)
        sys.exit(EXIT_INVALID)
    if output == "json":
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        for line in report.lines():
            click.echo(line)
        click.echo(report.summary())
    unchecked = report.count(Status.SKIPPED) and not ignore_missing_schemas
    if unchecked:
        click.echo(
            "fleet validate: a kind with no schema was not validated: pass its CRD (in --crds or among the "
            "manifests), or --ignore-missing-schemas",
            err=True,
        )
    sys.exit(0 if report.ok and not unchecked else EXIT_FAILED)
