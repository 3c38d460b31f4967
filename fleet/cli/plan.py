"""``fleet plan``: which clusters each job trains on, and why every other cluster is out."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fleet.cli._options import base_option, repo_option
from fleet.errors import EXIT_INVALID
from fleet.plan import BASIS, JobChange, JobPlan, PlanError, compare, plan
from fleet.repository import Repository

if TYPE_CHECKING:
    from fleet.hub_state import LiveHub

_MARKER = {True: "[green]selected[/]", False: "[red]out[/]"}


@click.command("plan")
@click.argument("jobs", nargs=-1)
@repo_option
@click.option("--output", type=click.Choice(["table", "json", "markdown"]), default="table", show_default=True)
@click.option("--diff", is_flag=True, help="Show the clusters each job gains or loses against --base.")
@base_option
@click.option("--hub", is_flag=True, help="Score Balance and Steady from the hub's live PlacementDecisions.")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The hub's kubeconfig (implies --hub).  [default: $KUBECONFIG, ~/.kube/config, or in-cluster]",
)
@click.option("--context", default=None, help="The kubeconfig context (implies --hub).")
def command(
    jobs: tuple[str, ...],
    repo: Path,
    output: str,
    diff: bool,
    base: str | None,
    hub: bool,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    """Evaluate each job's rendered Placement over clusters/ as OCM's scheduler does: the clusters selected,
    with their scores, and for every other cluster the reason it is out; PlacementSatisfied as OCM would set
    it; whether minAvailableClients is met.

    Balance and Steady score from PlacementDecisions: offline the plan assumes a first placement on a hub
    holding none; --diff takes each job's base selection as its earlier decisions; --hub (or --kubeconfig)
    reads the hub's live decisions and clusters (registration, taints, allocatable).

    Exit 2 for an invalid repository, an unknown job or an unreachable hub. With --diff: exit 0 when no job
    gains or loses a cluster, 1 when one does, 2 on errors.
    """
    from fleet.cli._repository import job_name, load_or_exit

    if base and not diff:
        click.echo("--base goes with --diff", err=True)
        sys.exit(EXIT_INVALID)
    repository = load_or_exit(repo, "planned")
    jobs = tuple(job_name(repository, job, "plan") for job in jobs)
    live = _read_hub(kubeconfig, context) if hub or kubeconfig or context else None
    try:
        if diff:
            changes = _plan_diff(repository, repo, jobs, base, live)
        else:
            plans = plan(repository, jobs, hub=live)
    except PlanError as error:
        click.echo(f"fleet plan: {error}", err=True)
        sys.exit(EXIT_INVALID)

    if diff:
        _show_changes(changes, output)
        sys.exit(1 if any(c.status != "unchanged" for c in changes) else 0)
    if output == "json":
        click.echo(json.dumps({"jobs": [p.to_json() for p in plans]}, indent=2))
    elif output == "markdown":
        click.echo("\n".join(_markdown_plan(p) for p in plans), nl=False)
    else:
        _print_tables(plans)


def _read_hub(kubeconfig: Path | None, context: str | None) -> LiveHub:
    from fleet.cli._hub import hub_client_or_exit
    from fleet.hub_state import HubUnreadable, LiveHub

    client = hub_client_or_exit(kubeconfig, context, "plan")
    try:
        return LiveHub.read(client)
    except HubUnreadable as error:  # say why, never a traceback
        click.echo(f"fleet plan: cannot read the hub's PlacementDecisions and ManagedClusters: {error}", err=True)
        sys.exit(EXIT_INVALID)


def _plan_diff(
    repository: Repository, repo: Path, jobs: Sequence[str], base: str | None, live: LiveHub | None
) -> list[JobChange]:
    from fleet.diff import DiffError, base_tree, resolve_base
    from fleet.errors import InvalidRepository
    from fleet.repository import load_repository

    try:
        commit, description = resolve_base(repo, base)
        with base_tree(repo, commit) as root:
            try:
                base_repository = load_repository(root)
            except InvalidRepository as error:
                problems = "; ".join(str(p) for p in error.problems)
                raise DiffError(f"the base ({description}, {commit[:12]}) does not load: {problems}") from error
            base_jobs = [name for name in jobs if name in base_repository.jobs]
            before = plan(base_repository, base_jobs, hub=live) if base_jobs or not jobs else []
    except DiffError as error:
        click.echo(f"fleet plan --diff: {error}", err=True)
        sys.exit(EXIT_INVALID)
    head_jobs = [name for name in jobs if name in repository.jobs]
    unknown = [name for name in jobs if name not in repository.jobs and name not in {p.job for p in before}]
    if unknown:
        raise PlanError(f"no job named {', '.join(map(repr, unknown))} in the working tree or the base")
    # OCM keeps what a Placement chose before (Steady): the base's selection is the head's earlier decisions,
    # unless the hub's own decisions are read.
    earlier = {p.job: p.selected for p in before}
    after = plan(repository, head_jobs, hub=live, earlier=earlier) if head_jobs or not jobs else []
    return compare(before, after)


# --- output -----------------------------------------------------------------------------------------------


def _print_tables(plans: Sequence[JobPlan]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=False, width=_width())
    for job_plan in plans:
        met = "[green]met[/]" if job_plan.min_available_met else "[bold red]NOT met[/]"
        live = (
            ""
            if job_plan.live_decisions is None
            else f"\nthe hub's PlacementDecisions name now: {', '.join(job_plan.live_decisions) or 'none'}"
        )
        notes = "".join(f"\n[yellow]{escape(note)}[/]" for note in job_plan.notes)
        table = Table(
            title=(
                f"[bold]{job_plan.job}[/] (namespace {job_plan.namespace}, dataset {job_plan.dataset}): "
                f"{len(job_plan.selected)} selected of numberOfClusters {job_plan.number_of_clusters}; "
                f"minAvailableClients {job_plan.min_available_clients} {met}; {_conditions(job_plan)}"
            ),
            title_justify="left",
            caption=(
                f"clusterSets {', '.join(job_plan.cluster_sets) or '(all bound)'}; bound to the namespace: "
                f"{', '.join(job_plan.bound_cluster_sets) or 'none'}; policies: "
                f"{', '.join(job_plan.policies) or 'none'}\n{escape(BASIS[job_plan.basis])}{live}{notes}"
            ),
            caption_justify="left",
        )
        for column in ("cluster", "cluster set", "decision", "score", "prioritizers", "reason"):
            table.add_column(column, justify="right" if column == "score" else "left")
        for cluster in job_plan.clusters:
            table.add_row(
                cluster.cluster,
                cluster.cluster_set,
                _MARKER[cluster.selected],
                "" if cluster.score is None else str(cluster.score),
                _prioritizers(cluster.scores, job_plan.weights),
                escape("\n".join([r.message for r in cluster.reasons] + list(cluster.hub_notes))),
            )
        console.print(table)


def _conditions(job_plan: JobPlan) -> str:
    """PlacementSatisfied (and PlacementMisconfigured when true) as OCM would set them."""
    from rich.markup import escape

    shown = []
    for condition in (job_plan.satisfied, job_plan.misconfigured):
        if condition is None or (condition.type == "PlacementMisconfigured" and not condition.status):
            continue
        shown.append(f"{condition.type}={condition.status} ({condition.reason}: {escape(condition.message)})")
    return "; ".join(shown)


_SHORT = {"ResourceAllocatableCPU": "CPU", "ResourceAllocatableMemory": "Memory"}


def _prioritizers(scores: Mapping[str, int], weights: Mapping[str, int]) -> str:
    """Each prioritizer's score, with its weight where it is not 1."""
    return ", ".join(
        f"{_SHORT.get(name, name)} {score}" + (f" x{weights[name]}" if weights.get(name, 1) != 1 else "")
        for name, score in scores.items()
    )


def _markdown_plan(job_plan: JobPlan) -> str:
    met = "met" if job_plan.min_available_met else "**not met**"
    satisfied = job_plan.satisfied
    condition = "" if satisfied is None else f"; PlacementSatisfied={satisfied.status} ({satisfied.reason})"
    lines = [
        f"**{job_plan.job}**: {len(job_plan.selected)} selected; minAvailableClients "
        f"{job_plan.min_available_clients} {met}{condition}\n",
        f"{BASIS[job_plan.basis]}.\n",
        "| cluster | decision | score | prioritizers | reason |",
        "|---|---|---:|---|---|",
    ]
    for c in job_plan.clusters:
        score = "" if c.score is None else str(c.score)
        reason = "; ".join([r.message for r in c.reasons] + list(c.hub_notes)).replace("|", "\\|")
        parts = _prioritizers(c.scores, job_plan.weights)
        lines.append(f"| {c.cluster} | {'selected' if c.selected else 'out'} | {score} | {parts} | {reason} |")
    return "\n".join(lines) + "\n\n"


def _show_changes(changes: Sequence[JobChange], output: str) -> None:
    if output == "json":
        click.echo(json.dumps({"jobs": [c.to_json() for c in changes]}, indent=2))
        return
    rows = [
        (
            c.job,
            c.status,
            ", ".join(c.gained) or "-",
            ", ".join(c.lost) or "-",
            ", ".join(c.after) or "-",
            _met(c.min_available_before, c.min_available_after),
        )
        for c in changes
    ]
    header = ("job", "status", "gains", "loses", "selected now", "minAvailableClients met")
    if output == "markdown":
        click.echo("#### Placement (`fleet plan --diff`)\n")
        if not changes:
            click.echo("No jobs.\n")
            return
        click.echo("| " + " | ".join(header) + " |")
        click.echo("|" + "---|" * len(header))
        for row in rows:
            click.echo("| " + " | ".join(row) + " |")
        click.echo("")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Clusters each job gains or loses", title_justify="left")
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=False, width=_width()).print(table)


def _met(before: bool | None, after: bool | None) -> str:
    show = {None: "-", True: "yes", False: "no"}
    return show[after] if before == after else f"{show[before]} → {show[after]}"


def _width() -> int | None:
    # Rich falls back to 80 columns without a terminal; CI logs have room for reasons on one line.
    return None if sys.stdout.isatty() else 160
