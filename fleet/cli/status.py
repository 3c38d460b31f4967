"""``fleet status [JOB]``: the phase, round, collaborators and latest metrics of jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from fleet.errors import EXIT_INVALID
from fleet.federation.status import InvalidStatusError, JobStatus, LocalStatusSource, StatusSource

EXIT_NOT_FOUND = 1


def _sources(work_dir: Path) -> list[StatusSource]:
    # One place to add the hub (statuses of FederatedLearning resources read through a kubeconfig).
    return [LocalStatusSource(work_dir)]


def _last_metric(status: JobStatus) -> str:
    current = status.status
    metrics = current.final_metrics or (current.rounds[-1].metrics if current.rounds else {})
    if not metrics:
        return ""
    name = "accuracy" if "accuracy" in metrics else sorted(metrics)[0]
    return f"{name} {metrics[name]:.4f}"


@click.command("status")
@click.argument("job", required=False)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".fleet/runs"),
    show_default=True,
    help="Where `fleet run` keeps each job's status.json.",
)
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def command(job: str | None, work_dir: Path, output: str) -> None:
    """Show the status of JOB (or of every job run here): phase, round, collaborators, last metric."""
    found: list[JobStatus] = []
    try:
        for source in _sources(work_dir):
            found.extend(source.statuses(job))
    except InvalidStatusError as error:
        click.echo(f"fleet status: {error}", err=True)
        sys.exit(EXIT_INVALID)
    if job is not None and not found:
        click.echo(f"fleet status: no status for job {job!r} under {work_dir} (has `fleet run {job}` run?)", err=True)
        sys.exit(EXIT_NOT_FOUND)
    if output == "json":
        payload = [
            {"job": s.job, "source": s.source, "status": s.status.model_dump(mode="json", by_alias=True)} for s in found
        ]
        click.echo(json.dumps(payload, indent=2))
        return
    if not found:
        click.echo(f"no job status under {work_dir}")
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("job", "phase", "round", "clusters", "last metric", "message"):
        table.add_column(column, overflow="fold")
    for item in found:
        current = item.status
        table.add_row(
            item.job,
            current.phase.value,
            f"{current.current_round}/{current.total_rounds}",
            ", ".join(current.participating_clusters),
            _last_metric(item),
            current.message.splitlines()[0] if current.message else "",
        )
    # Piped output has no terminal width: keep rows on one line rather than folding at 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
