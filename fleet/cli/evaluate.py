"""``fleet evaluate MODEL``: accuracy overall and per digit on the held-out split, a confusion matrix, a report."""

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
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--report",
    type=OutputFolder(),
    default=None,
    help="Also write report.md and confusion-matrix.png into this folder.",
)
def command(model: Path, test_data: Path | None, output: str, report: Path | None) -> None:
    """Check MODEL (a model.pt a run saved) on the held-out split: does it predict all the digits?

    Prints the accuracy overall and per digit; --output json prints {"accuracy": .., "per_class_accuracy":
    {"0": .., ...}}. Exit 2 when the model or the test data is missing, unreadable, or they do not fit.
    """
    from fleet.data import test_split_path
    from fleet.evaluation import EvaluationError, evaluate_model, write_report

    try:
        evaluation = evaluate_model(model, test_data or test_split_path(DATA_ROOT))
    except EvaluationError as error:
        hint = "" if test_data else " (run `fleet data prepare` to write it, or pass --test-data)"
        message = str(error) + (hint if str(error).startswith("test data:") else "")
        click.echo(f"fleet evaluate: {message}", err=True)
        sys.exit(EXIT_INVALID)
    written = write_report(evaluation, report) if report is not None else []
    if output == "json":
        click.echo(json.dumps(evaluation.to_json(), indent=2))
    else:
        for line in evaluation.lines():
            click.echo(line)
    for path in written:
        click.echo(f"wrote {path}", err=output == "json")
