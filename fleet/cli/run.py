"""``fleet run JOB``: train a job on this machine with a real Flower federation over mutual TLS."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleet.cli._options import data_root_option, refuse_output_in_sources, repo_option, work_dir_option
from fleet.cli._repository import job_name, load_or_exit
from fleet.errors import EXIT_INVALID
from fleet.federation.bundle import AppError, components
from fleet.federation.local import (
    MODEL_CARD,
    AlreadyRunningError,
    LocalPlan,
    RunError,
    RunSettings,
    check_test_data,
    plan_run,
    run_federation,
)
from fleet.federation.progress import RoundFinished, Started
from fleet.federation.status import now
from fleet.models import Job, Phase

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from fleet.observability.local import RunMetrics

EXIT_FAILED = 1


class _ProgressView:
    """A progress bar over rounds with the participants and metrics of the last round."""

    def __init__(self, console: Console, metrics: RunMetrics | None = None, job: Job | None = None) -> None:
        self.console = console
        self.metrics = metrics
        self.job = job
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None
        self.status = console.status("starting")
        self.rounds: dict[int, dict[str, float]] = {}
        """Each aggregated round's metrics, for the training curve drawn at the end."""

    def phase(self, message: str) -> None:
        self.status.update(message)

    def warning(self, message: str) -> None:
        self.console.print(f"[bold yellow]warning:[/] {message}")

    def started(self, rounds: int, clusters: tuple[str, ...]) -> None:
        if self.metrics is not None and self.job is not None:
            timeout = self.job.training.round_timeout_seconds
            self.metrics.apply([Started(rounds, self.job.min_available_clients, timeout, now())])
        self.status.stop()
        self.console.print(f"collaborators: {', '.join(clusters)}")
        self.progress.start()
        self.task = self.progress.add_task("rounds", total=rounds, detail="waiting for round 1")

    def round(self, event: RoundFinished) -> None:
        if self.metrics is not None:
            self.metrics.apply([event])
        self.rounds[event.round] = dict(event.metrics)  # a round's event may come again: the last one stands
        metrics = " ".join(f"{k}={v:.3f}" for k, v in sorted(event.metrics.items()))
        detail = f"{', '.join(event.participants)} | {metrics}"
        if self.task is not None:
            self.progress.update(self.task, completed=event.round, detail=detail)

    def __enter__(self) -> _ProgressView:
        self.status.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.status.stop()
        self.progress.stop()


@click.command("run")
@click.argument("job", metavar="JOB")
@repo_option
@data_root_option
@work_dir_option("Status, credentials, logs and the model storage of each job.")
@click.option(
    "--test-data",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Held-out test split for the ServerApp's evaluation [default: <data-root>/test/<dataset>.npz if present].",
)
@click.option(
    "--executor",
    type=click.Choice(["warm", "flower"]),
    default="warm",
    show_default=True,
    help="warm: one pre-imported executor forks the ServerApp and each ClientApp; "
    "flower: Flower's SuperExec, a new process per task.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve the run's Prometheus metrics on http://<metrics-host>:PORT/metrics while it runs.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address --metrics-port listens on.",
)
@click.option(
    "--app",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    hidden=True,
    help="Run another Flower app: a folder with a FAB pyproject.toml and the app's packages.",
)
def command(
    job: str,
    repo: Path,
    data_root: Path,
    work_dir: Path,
    test_data: Path | None,
    executor: str,
    metrics_port: int | None,
    metrics_host: str,
    app: Path | None,
) -> None:
    """Run JOB on this machine: one SuperLink and one SuperNode per placed cluster, over mutual TLS.

    JOB is a job's name or its file (jobs/<file>.yaml). One run of a job at a time: a second is refused (exit 2)
    with the first one's pid. Each run writes into its own folder under <work-dir>/<job>/attempts/; only a
    run that completes replaces the job's model storage, whole.
    """
    console = Console(stderr=True)
    repository = load_or_exit(repo, "run")
    refuse_output_in_sources(
        repo,
        work_dir,
        command="run",
        option="--work-dir",
        holding="the runs' status, credentials, logs and model storage",
        example=Path(".fleet") / "runs",
        replaced_whole=False,
    )
    if app is not None:
        try:
            components(app)
        except AppError as error:
            click.echo(f"fleet run: --app: {error}", err=True)
            sys.exit(EXIT_INVALID)
    try:
        plan = plan_run(repository, job_name(repository, job, "run"), data_root, work_dir)
    except RunError as error:
        click.echo(f"fleet run: {error}", err=True)
        sys.exit(EXIT_INVALID)
    if test_data is None:
        from fleet.data import test_split_path

        default = test_split_path(data_root, plan.job.dataset)
        test_data = default.resolve() if default.is_file() else None
    if test_data is not None:
        try:
            check_test_data(plan, test_data)
        except RunError as error:
            click.echo(f"fleet run: {error}", err=True)
            sys.exit(EXIT_INVALID)
    settings = RunSettings(executor="warm" if executor == "warm" else "flower", app=app.resolve() if app else None)
    metrics, server = _metrics_server(plan, metrics_host, metrics_port) if metrics_port else (None, None)
    console.print(
        f"running job [bold]{plan.job.name}[/]: {plan.job.rounds} rounds, "
        f"{len(plan.collaborators)} collaborators, TLS {'on' if plan.job.tls else '[bold red]OFF[/]'}"
    )
    try:
        with _ProgressView(console, metrics, plan.job) as view:
            result = run_federation(plan, view, settings, test_data)
    except AlreadyRunningError as error:
        click.echo(f"fleet run: {error}", err=True)
        sys.exit(EXIT_INVALID)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    status = result.status
    if status.phase is Phase.COMPLETED:
        table = Table(title=f"{plan.job.name}: completed", show_header=True)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in sorted(status.final_metrics.items()):
            table.add_row(name, f"{value:.4f}")
        console.print(table)
        click.echo(f"model: {status.model_path}", err=True)
        click.echo(f"model card: {plan.storage_dir / MODEL_CARD}", err=True)
        _training_curve(plan, view.rounds)
        click.echo(f"status: {plan.job_dir / 'status.json'}; logs: {result.attempt.logs}", err=True)
        return
    # The status message is the resource's ("failed: <reason>"); the line already says the job failed.
    click.echo(f"fleet run: job {plan.job.name} failed: {status.message.removeprefix('failed: ')}", err=True)
    click.echo(f"logs: {result.attempt.logs}; status: {plan.job_dir / 'status.json'}", err=True)
    click.echo(f"the model storage {plan.storage_dir} is as the last completed run left it", err=True)
    sys.exit(EXIT_FAILED)


def _training_curve(plan: LocalPlan, rounds: dict[int, dict[str, float]]) -> None:
    """Draw the run's accuracy and loss per round (`fleet evaluate --report`'s curve) beside its model."""
    from fleet.evaluation import CURVE_FILE, history_of_rounds, write_training_curve
    from fleet.federation.progress import PROGRESS_FILE

    if not rounds:
        return  # a run of zero rounds has no curve
    history = history_of_rounds(plan.storage_dir / PROGRESS_FILE, sorted(rounds.items()))
    try:
        curve = write_training_curve(history, plan.storage_dir / CURVE_FILE)
    except OSError as error:
        # The model is in place; a picture that cannot be written does not undo a completed run.
        click.echo(f"warning: the training curve could not be written: {error}", err=True)
        return
    click.echo(f"training curve: {curve}", err=True)


def _metrics_server(plan: LocalPlan, host: str, port: int) -> tuple[RunMetrics, ThreadingHTTPServer]:
    """The run's metrics and their server, started before anything else so that a taken port is refused
    (exit 2) before the run begins."""
    from fleet.observability.local import RunMetrics, serve

    metrics = RunMetrics(
        plan.job.namespace, plan.job.name, plan.job_dir / "status.json", (c.cluster for c in plan.collaborators)
    )
    try:
        server = serve(metrics.exposition, host, port)
    except OSError as error:
        click.echo(f"fleet run: --metrics-port {port}: cannot listen on {host}:{port}: {error.strerror}", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"metrics: http://{host}:{port}/metrics", err=True)
    return metrics, server
