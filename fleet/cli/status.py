"""``fleet status [JOB]``: the phase, round, collaborators and latest metrics of jobs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from fleet.cli._options import work_dir_option
from fleet.errors import EXIT_INVALID
from fleet.federation.status import JobStatus, LocalStatusSource, StatusSource
from fleet.models import Phase

_FINISHED = (Phase.COMPLETED, Phase.FAILED)

EXIT_NOT_FOUND = 1
EXIT_JOB_FAILED = 1
"""With --watch: the watched job failed."""


def _sources(
    work_dir: Path, hub: bool, kubeconfig: Path | None, context: str | None, namespace: str | None
) -> tuple[list[StatusSource], tuple[type[Exception], ...]]:
    """The sources to read, and the errors that mean a source could not be asked."""
    if not (hub or kubeconfig or context):
        return [LocalStatusSource(work_dir)], ()
    # The hub: the FederatedLearning resources' status, read through a kubeconfig (imported only here, so the
    # local command never pays for the Kubernetes client). Connected now: an unusable kubeconfig exits 2.
    from fleet.cli._hub import hub_client_or_exit
    from fleet.controller.hub import ApiError
    from fleet.controller.status import HubStatusSource

    client = hub_client_or_exit(kubeconfig, context, "status")
    path = str(kubeconfig) if kubeconfig else None
    return [HubStatusSource(path, context, namespace, _client=client)], (ApiError,)


def _last_metric(status: JobStatus) -> str:
    current = status.status
    metrics = current.final_metrics or (current.rounds[-1].metrics if current.rounds else {})
    if not metrics:
        return ""
    name = "accuracy" if "accuracy" in metrics else sorted(metrics)[0]
    return f"{name} {metrics[name]:.4f}"


@click.command("status")
@click.argument("job", required=False)
@work_dir_option("Where `fleet run` keeps each job's status.json.")
@click.option("--hub", is_flag=True, help="Read the jobs' FederatedLearning resources on the hub instead.")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The hub's kubeconfig (implies --hub).  [default: $KUBECONFIG, ~/.kube/config, or in-cluster]",
)
@click.option("--context", default=None, help="The kubeconfig context (implies --hub).")
@click.option("--namespace", "-n", default=None, help="With --hub: only jobs in this namespace.")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--watch",
    "-w",
    is_flag=True,
    help="Follow the job(s) live: show the status again whenever it changes, until JOB completes or fails "
    "(without JOB: until Ctrl-C).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="With --watch: seconds between two reads.",
)
def command(
    job: str | None,
    work_dir: Path,
    hub: bool,
    kubeconfig: Path | None,
    context: str | None,
    namespace: str | None,
    output: str,
    watch: bool,
    interval: float,
) -> None:
    """Show the status of JOB (or of every job): phase, round, collaborators, last metric.

    Jobs run here with `fleet run` by default; with --hub (or --kubeconfig), the jobs on an OCM hub. A local
    run that died without recording its end shows as Failed ("crashed"). Exit 1 when JOB has no status, 2 when
    a status file cannot be read (every other job is still shown). With --watch, the status is shown again on
    every change, until JOB completes or fails (exit 1 if it failed) or Ctrl-C.
    """
    sources, unreachable = _sources(work_dir, hub, kubeconfig, context, namespace)
    where = "the hub" if sources and not isinstance(sources[0], LocalStatusSource) else str(work_dir)
    if watch:
        _watch(job, sources, unreachable, where, output, interval)
        return
    found, unreadable = _read(job, sources, unreachable)
    if job is not None and not found and not unreadable:
        hint = "" if where == "the hub" else f" (has `fleet run {job}` run?)"
        click.echo(f"fleet status: no status for job {job!r} on {where}{hint}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    if output == "json":
        payload = [
            {"job": s.job, "source": s.source, "status": s.status.model_dump(mode="json", by_alias=True)} for s in found
        ]
        click.echo(json.dumps(payload, indent=2))
        _exit_if(unreadable)
        return
    if not found:
        if not unreadable:
            click.echo(f"no job status on {where}")
        _exit_if(unreadable)
        return
    # Piped output has no terminal width: keep rows on one line rather than folding at 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(_table(found))
    _exit_if(unreadable)


def _read(
    job: str | None, sources: list[StatusSource], unreachable: tuple[type[Exception], ...]
) -> tuple[list[JobStatus], list[JobStatus]]:
    """The readable statuses and the unreadable ones (each reported on stderr); exit 2 when a source fails."""
    found: list[JobStatus] = []
    try:
        for source in sources:
            found.extend(source.statuses(job))
    except unreachable as error:  # the hub could not be asked: say why, never a traceback
        click.echo(f"fleet status: cannot read the jobs on the hub: {error}", err=True)
        sys.exit(EXIT_INVALID)
    unreadable = [s for s in found if s.problem]
    for item in unreadable:
        click.echo(f"fleet status: {item.problem}", err=True)
    return [s for s in found if not s.problem], unreadable


def _table(found: list[JobStatus]) -> Table:
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
    return table


def _watch(
    job: str | None,
    sources: list[StatusSource],
    unreachable: tuple[type[Exception], ...],
    where: str,
    output: str,
    interval: float,
) -> None:
    """Show the statuses again whenever they change; a line (or a JSON document) per change when the output is
    not a terminal, so that a log of the watch reads as the job's history."""
    console = Console(width=None if sys.stdout.isatty() else 200)
    shown: str | None = None
    try:
        while True:
            found, _unreadable = _read(job, sources, unreachable)
            if output == "json":
                payload = [
                    {"job": s.job, "source": s.source, "status": s.status.model_dump(mode="json", by_alias=True)}
                    for s in found
                ]
                view = json.dumps(payload)
            else:
                view = (
                    "\n".join(
                        f"{s.job} {s.status.phase.value} {s.status.current_round}/{s.status.total_rounds} "
                        f"{','.join(s.status.participating_clusters)} {_last_metric(s)} {s.status.message}"
                        for s in found
                    )
                    or f"no job status on {where} yet"
                )
            if view != shown:
                shown = view
                if output == "json":
                    click.echo(view)
                elif found:
                    console.print(_table(found))
                else:
                    console.print(view)
            if job is not None and found and all(s.status.phase in _FINISHED for s in found):
                if any(s.status.phase is Phase.FAILED for s in found):
                    sys.exit(EXIT_JOB_FAILED)
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _exit_if(unreadable: list[JobStatus]) -> None:
    """Exit 2 after showing every readable job, when a status file could not be read."""
    if unreadable:
        sys.exit(EXIT_INVALID)
