"""Check a trained model on the held-out split: accuracy overall and per digit, a confusion matrix, the
training curve of its run, a report, and links to them in the run's model card.

This is the lifecycle's closing step ("does it predict all the digits?"). The model is a file a run saved
(`fleet.app.task.save_model`: weights, architecture name and input shape), so nothing of the run is needed; the
training curve comes from the run's ``metrics.json`` (`read_history`), when there is one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fleet.app.data import NUM_CLASSES, DataError, load_dataset
from fleet.app.files import write_text_atomically
from fleet.app.task import ModelError, evaluate, load_model

CONFUSION_FILE = "confusion-matrix.png"
PER_DIGIT_FILE = "per-digit-accuracy.png"
CURVE_FILE = "training-curve.png"
REPORT_FILE = "report.md"
METRICS_FILE = "metrics.json"
"""What a run writes beside its model (fleet.app.server_app.METRICS_FILE)."""
MODEL_CARD_FILE = "model-card.md"
"""What `fleet run` names the card beside the model (fleet.federation.local.MODEL_CARD)."""
TARGET = 0.95
"""The accuracy every digit should reach (drawn in the figures; the benchmark's bar)."""
_CARD_BEGIN = "<!-- fleet evaluate: begin -->"
_CARD_END = "<!-- fleet evaluate: end -->"


class EvaluationError(Exception):
    """The model or the test data is missing, unreadable, or they do not fit each other."""


@dataclass(frozen=True)
class Evaluation:
    model_path: Path
    test_data_path: Path
    input_shape: tuple[int, int, int]
    accuracy: float
    per_class_accuracy: dict[int, float]
    """Digit -> accuracy, for the digits present in the test data."""
    confusion: NDArray[np.int64] = field(repr=False)
    """confusion[true digit, predicted digit] counts."""

    @property
    def num_examples(self) -> int:
        return int(self.confusion.sum())

    def samples(self, digit: int) -> int:
        return int(self.confusion[digit].sum())

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "per_class_accuracy": {str(d): a for d, a in sorted(self.per_class_accuracy.items())},
        }

    def lines(self) -> list[str]:
        """The text output: overall accuracy, then one line per digit."""
        side = f"{self.input_shape[1]}x{self.input_shape[2]}"
        lines = [
            f"model: {self.model_path} ({side} images)",
            f"test data: {self.test_data_path} ({self.num_examples} images)",
            f"accuracy: {self.accuracy:.4f}",
            "digit  accuracy  images  most often mistaken for",
        ]
        for digit, accuracy, samples, mistaken in self.rows():
            lines.append(f"{digit:<5}  {accuracy:<8}  {samples:>6}  {mistaken}")
        return lines

    def rows(self) -> list[tuple[int, str, int, str]]:
        """Per digit: accuracy ("-" when the test data holds none), images, the wrong answer it gets most."""
        rows = []
        for digit in range(NUM_CLASSES):
            accuracy = self.per_class_accuracy.get(digit)
            shown = f"{accuracy:.4f}" if accuracy is not None else "-"
            rows.append((digit, shown, self.samples(digit), self._mistaken_for(digit)))
        return rows

    def _mistaken_for(self, digit: int) -> str:
        row = self.confusion[digit].copy()
        row[digit] = 0
        if row.sum() == 0:
            return "-"
        wrong = int(row.argmax())
        return f"{wrong} ({int(row[wrong])}x)"


def evaluate_model(model_path: Path, test_data_path: Path) -> Evaluation:
    """Evaluate the saved model on the test data (a partition file, or a folder with a t10k/train IDX pair)."""
    try:
        model, input_shape = load_model(model_path)
    except ModelError as error:
        raise EvaluationError(str(error)) from None
    try:
        test = load_dataset(test_data_path, idx_prefixes=("t10k", "train"))
    except DataError as error:
        raise EvaluationError(f"test data: {error}") from None
    if test.input_shape != input_shape:
        raise EvaluationError(
            f"{test_data_path}: expected {input_shape[1]}x{input_shape[2]} images for the model {model_path}, "
            f"got {test.input_shape[1]}x{test.input_shape[2]}"
        )
    result = evaluate(model, test)
    return Evaluation(
        Path(model_path),
        Path(test_data_path),
        input_shape,
        result.accuracy,
        result.per_class_accuracy,
        result.confusion,
    )


def confusion_figure(evaluation: Evaluation) -> Any:
    """The confusion matrix as a matplotlib Figure (no pyplot, so no display and no global state)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5), dpi=100)
    axes = figure.add_subplot()
    counts = evaluation.confusion
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, label="images")
    axes.set_xticks(range(NUM_CLASSES))
    axes.set_yticks(range(NUM_CLASSES))
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("true digit")
    axes.set_title(f"accuracy {evaluation.accuracy:.4f} on {evaluation.num_examples} held-out images")
    threshold = counts.max() / 2 if counts.max() else 1
    for true in range(NUM_CLASSES):
        for predicted in range(NUM_CLASSES):
            if counts[true, predicted]:
                colour = "white" if counts[true, predicted] > threshold else "black"
                axes.text(predicted, true, str(counts[true, predicted]), ha="center", va="center", color=colour)
    figure.tight_layout()
    return figure


@dataclass(frozen=True)
class History:
    """Per round of a run, from its ``metrics.json``: what the training curve shows."""

    path: Path
    rounds: tuple[int, ...]
    accuracy: tuple[float, ...]
    """Held-out accuracy (or the participants' federated evaluation) after each round; NaN where missing."""
    eval_loss: tuple[float, ...]
    train_loss: tuple[float, ...]
    """The collaborators' mean training loss over the round's local steps."""
    lowest_digit: tuple[float, ...]
    """The lowest per-digit accuracy after each round (server-side evaluation only; else NaN)."""


def read_history(path: Path) -> History:
    """The per-round metrics of the ``metrics.json`` a run wrote; `EvaluationError` naming the file and what
    was expected when it is missing or not such a file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"{path}: expected the metrics.json a fleet run writes, it does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationError(
            f"{path}: expected the metrics.json a fleet run writes, it is unreadable: {error}"
        ) from None
    rounds = document.get("rounds") if isinstance(document, dict) else None
    if not isinstance(rounds, list) or not rounds:
        raise EvaluationError(f"{path}: expected a 'rounds' list with one entry per completed round, found none")
    entries = []
    for position, entry in enumerate(rounds):
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        number = entry.get("round") if isinstance(entry, dict) else None
        if not isinstance(number, int) or not isinstance(metrics, dict):
            raise EvaluationError(f"{path}: rounds[{position}]: expected {{'round': <n>, 'metrics': {{...}}}}")
        entries.append((number, metrics))
    return history_of_rounds(path, entries)


def history_of_rounds(source: Path, rounds: Iterable[tuple[int, Mapping[str, object]]]) -> History:
    """The `History` of rounds given as (round, metrics), in order; ``source`` names where they were read."""
    numbers: list[int] = []
    metrics_by_round: list[Mapping[str, object]] = []
    for number, metrics in rounds:
        numbers.append(number)
        metrics_by_round.append(metrics)

    def series(key: str) -> tuple[float, ...]:
        return tuple(_number(m.get(key)) for m in metrics_by_round)

    lowest = tuple(
        min((_number(m[f"accuracy_{d}"]) for d in range(NUM_CLASSES) if f"accuracy_{d}" in m), default=math.nan)
        for m in metrics_by_round
    )
    return History(source, tuple(numbers), series("accuracy"), series("eval_loss"), series("train_loss"), lowest)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def per_digit_figure(evaluation: Evaluation) -> Any:
    """Accuracy of each digit as bars, with the target line and the overall accuracy."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    digits = list(range(NUM_CLASSES))
    values = [evaluation.per_class_accuracy.get(d, 0.0) for d in digits]
    colours = ["tab:blue" if value >= TARGET else "tab:red" for value in values]
    bars = axes.bar(digits, values, color=colours)
    for bar, value, digit in zip(bars, values, digits, strict=True):
        label = f"{value:.3f}" if digit in evaluation.per_class_accuracy else "none"
        axes.text(bar.get_x() + bar.get_width() / 2, value + 0.002, label, ha="center", va="bottom", fontsize=7)
    axes.axhline(TARGET, color="tab:red", linestyle="--", linewidth=1, label=f"target {TARGET:.2f}")
    axes.axhline(
        evaluation.accuracy, color="grey", linestyle=":", linewidth=1, label=f"overall {evaluation.accuracy:.4f}"
    )
    low = min([*values, TARGET])
    axes.set_ylim(max(0.0, low - 0.05), 1.01)
    axes.set_xticks(digits)
    axes.set_xlabel("digit")
    axes.set_ylabel("accuracy")
    axes.set_title(f"per-digit accuracy on {evaluation.num_examples} held-out images")
    # Below the axes: inside, it would hide the tops of the bars, where the numbers are.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def curve_figure(history: History) -> Any:
    """Accuracy (overall and of the lowest digit) and loss (training and held-out) per round."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.8), dpi=100)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    rounds = list(history.rounds)
    accuracy_axes.plot(rounds, history.accuracy, marker="o", label="accuracy")
    if not all(math.isnan(v) for v in history.lowest_digit):
        accuracy_axes.plot(rounds, history.lowest_digit, marker="s", linestyle="--", label="lowest digit")
    accuracy_axes.axhline(TARGET, color="tab:red", linestyle=":", linewidth=1, label=f"target {TARGET:.2f}")
    accuracy_axes.set_title("held-out accuracy per round")
    accuracy_axes.set_xlabel("round")
    accuracy_axes.set_ylabel("accuracy")
    accuracy_axes.legend(loc="lower right", fontsize=8)
    loss_axes.plot(rounds, history.train_loss, marker="o", label="training loss (collaborators' mean)")
    loss_axes.plot(rounds, history.eval_loss, marker="s", label="held-out loss")
    loss_axes.set_title("loss per round")
    loss_axes.set_xlabel("round")
    loss_axes.set_ylabel("cross-entropy")
    loss_axes.legend(loc="upper right", fontsize=8)
    for axes in (accuracy_axes, loss_axes):
        axes.set_xticks(rounds)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def write_training_curve(history: History, destination: Path) -> Path:
    """Draw `curve_figure` of ``history`` into the PNG ``destination``, atomically (a reader sees the old picture or
    the new one, never half of one)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}-", suffix=".png")
    os.close(handle)
    staging = Path(name)
    try:
        curve_figure(history).savefig(staging)
        staging.replace(destination)
    finally:
        staging.unlink(missing_ok=True)
    return destination


def markdown(evaluation: Evaluation, history: History | None = None) -> str:
    side = f"{evaluation.input_shape[1]}x{evaluation.input_shape[2]}"
    lines = [
        "# Model evaluation",
        "",
        f"- model: `{evaluation.model_path}` ({side} images)",
        f"- test data: `{evaluation.test_data_path}` ({evaluation.num_examples} held-out images)",
        f"- accuracy: **{evaluation.accuracy:.4f}**",
    ]
    if evaluation.per_class_accuracy:
        digit, lowest = min(evaluation.per_class_accuracy.items(), key=lambda item: item[1])
        lines.append(f"- lowest digit: {digit} at {lowest:.4f} (target: every digit at least {TARGET:.2f})")
    lines += [
        "",
        "| digit | accuracy | images | most often mistaken for |",
        "|---:|---:|---:|---|",
    ]
    for digit, accuracy, samples, mistaken in evaluation.rows():
        lines.append(f"| {digit} | {accuracy} | {samples} | {mistaken} |")
    lines += ["", f"![per-digit accuracy]({PER_DIGIT_FILE})", ""]
    if history is not None:
        lines += [
            f"Training curve, from `{history.path}` ({len(history.rounds)} rounds):",
            "",
            f"![training curve]({CURVE_FILE})",
            "",
            "| round | accuracy | lowest digit | held-out loss | training loss |",
            "|---:|---:|---:|---:|---:|",
        ]
        for row in zip(
            history.rounds, history.accuracy, history.lowest_digit, history.eval_loss, history.train_loss, strict=True
        ):
            lines.append(f"| {row[0]} | " + " | ".join(_shown(v) for v in row[1:]) + " |")
        lines.append("")
    lines += [
        f"![confusion matrix]({CONFUSION_FILE})",
        "",
        "Confusion matrix (rows: true digit, columns: predicted digit):",
        "",
        "| | " + " | ".join(str(d) for d in range(NUM_CLASSES)) + " |",
        "|---:|" + "---:|" * NUM_CLASSES,
    ]
    for digit in range(NUM_CLASSES):
        lines.append(f"| **{digit}** | " + " | ".join(str(int(v)) for v in evaluation.confusion[digit]) + " |")
    return "\n".join(lines) + "\n"


def _shown(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def write_report(evaluation: Evaluation, folder: Path, history: History | None = None) -> list[Path]:
    """Write ``report.md``, ``per-digit-accuracy.png``, ``confusion-matrix.png`` and, with ``history``,
    ``training-curve.png`` into ``folder``; all of them appear together or none does."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".report-"))
    try:
        per_digit_figure(evaluation).savefig(staging / PER_DIGIT_FILE)
        confusion_figure(evaluation).savefig(staging / CONFUSION_FILE)
        names = [PER_DIGIT_FILE, CONFUSION_FILE]
        if history is not None:
            curve_figure(history).savefig(staging / CURVE_FILE)
            names.append(CURVE_FILE)
        (staging / REPORT_FILE).write_text(markdown(evaluation, history), encoding="utf-8")
        names.append(REPORT_FILE)
        if history is None:
            (folder / CURVE_FILE).unlink(missing_ok=True)  # an earlier report's curve belongs to another model
        written = []
        for name in sorted(names):
            (staging / name).replace(folder / name)
            written.append(folder / name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def link_in_model_card(card: Path, evaluation: Evaluation, report: Sequence[Path]) -> None:
    """Add (or replace) the model card's evaluation section: the overall and per-digit accuracy and links, relative
    to the card, to the report and its pictures."""
    text = card.read_text(encoding="utf-8")
    if _CARD_BEGIN in text and _CARD_END in text:
        text = text[: text.index(_CARD_BEGIN)].rstrip("\n") + text[text.index(_CARD_END) + len(_CARD_END) :]
    links = {path.name: Path(os.path.relpath(path, card.parent)).as_posix() for path in report}
    digits = range(NUM_CLASSES)
    section = [
        _CARD_BEGIN,
        "## Evaluation",
        "",
        f"`fleet evaluate` on `{evaluation.test_data_path}` ({evaluation.num_examples} held-out images no "
        f"collaborator saw): accuracy **{evaluation.accuracy:.4f}**.",
        "",
        "| digit | " + " | ".join(str(d) for d in digits) + " |",
        "|---|" + "---:|" * NUM_CLASSES,
        "| accuracy | " + " | ".join(_shown(evaluation.per_class_accuracy.get(d, math.nan)) for d in digits) + " |",
        "",
    ]
    titles = {CURVE_FILE: "training curve", PER_DIGIT_FILE: "per-digit accuracy", CONFUSION_FILE: "confusion matrix"}
    section += [f"![{title}]({links[name]})" for name, title in titles.items() if name in links]
    if REPORT_FILE in links:
        section += ["", f"The full report: [{links[REPORT_FILE]}]({links[REPORT_FILE]})."]
    section.append(_CARD_END)
    write_text_atomically(card, text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n")
