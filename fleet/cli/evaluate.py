"""``fleet evaluate MODEL``: accuracy overall and per digit on the held-out split; with ``--report``, the
pictures (per-digit accuracy, confusion matrix, training curve) and a report, linked from the run's model card."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fleet.cli._options import DATA_ROOT, OutputFolder
from fleet.errors import EXIT_INVALID


@click.command("evaluate")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--test-data",
    type=click.Path(path_type=Path),
    default=None,
    help="The held-out split: a partition file, or a folder with an MNIST t10k/train IDX pair.  "
    "[default: .fleet/data/test/digits.npz, where `fleet data prepare` writes it]",
)
@click.option(
    "--metrics",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The run's metrics.json, for the training curve.  [default: metrics.json beside MODEL, when there is one]",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--report",
    type=OutputFolder(),
    default=None,
    help="Also write report.md, per-digit-accuracy.png, confusion-matrix.png and training-curve.png into this "
    "folder, and link them from the model-card.md beside MODEL.",
)
def command(model: Path, test_data: Path | None, metrics: Path | None, output: str, report: Path | None) -> None:
    """Check MODEL (a model.pt a run saved) on the held-out split: does it predict all the digits?

    Prints the accuracy overall and per digit; --output json prints {"accuracy": .., "per_class_accuracy":
    {"0": .., ...}}. With --report, also the pictures and a report: the training curve (accuracy and loss per
    round) is drawn from the run's metrics.json, and a model-card.md beside MODEL gets an evaluation section
    linking them. Exit 2 when the model, the test data or the metrics are missing, unreadable, or do not fit;
    nothing is written then.
    """
    from fleet.data import test_split_path
    from fleet.evaluation import (
        METRICS_FILE,
        MODEL_CARD_FILE,
        EvaluationError,
        evaluate_model,
        link_in_model_card,
        read_history,
        write_report,
    )

    beside = model.parent / METRICS_FILE
    try:
        evaluation = evaluate_model(model, test_data or test_split_path(DATA_ROOT))
        history = read_history(metrics or beside) if metrics is not None or beside.is_file() else None
    except EvaluationError as error:
        hint = "" if test_data else " (run `fleet data prepare` to write it, or pass --test-data)"
        message = str(error) + (hint if str(error).startswith("test data:") else "")
        click.echo(f"fleet evaluate: {message}", err=True)
        sys.exit(EXIT_INVALID)
    written = write_report(evaluation, report, history) if report is not None else []
    card = model.parent / MODEL_CARD_FILE
    linked = bool(written) and card.is_file()
    if linked:
        link_in_model_card(card, evaluation, written)
    if output == "json":
        click.echo(json.dumps(evaluation.to_json(), indent=2))
    else:
        for line in evaluation.lines():
            click.echo(line)
    for path in written:
        click.echo(f"wrote {path}", err=output == "json")
    if linked:
        click.echo(f"linked them from {card}", err=output == "json")
    if report is not None and history is None:
        click.echo(f"no training curve: no {METRICS_FILE} beside {model} (--metrics names one)", err=True)
