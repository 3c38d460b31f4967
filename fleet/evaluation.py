"""Check a trained model on the held-out split: accuracy overall and per digit, a confusion matrix, a report.

This is the lifecycle's closing step ("does it predict all the digits?"). The model is a file a run saved
(`fleet.app.task.save_model`: weights, architecture name and input shape), so nothing of the run is needed.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fleet.app.data import NUM_CLASSES, DataError, load_dataset
from fleet.app.task import ModelError, evaluate, load_model

CONFUSION_FILE = "confusion-matrix.png"
REPORT_FILE = "report.md"


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


def markdown(evaluation: Evaluation, image: str = CONFUSION_FILE) -> str:
    side = f"{evaluation.input_shape[1]}x{evaluation.input_shape[2]}"
    lines = [
        "# Model evaluation",
        "",
        f"- model: `{evaluation.model_path}` ({side} images)",
        f"- test data: `{evaluation.test_data_path}` ({evaluation.num_examples} held-out images)",
        f"- accuracy: **{evaluation.accuracy:.4f}**",
        "",
        "| digit | accuracy | images | most often mistaken for |",
        "|---:|---:|---:|---|",
    ]
    for digit, accuracy, samples, mistaken in evaluation.rows():
        lines.append(f"| {digit} | {accuracy} | {samples} | {mistaken} |")
    lines += [
        "",
        f"![confusion matrix]({image})",
        "",
        "Confusion matrix (rows: true digit, columns: predicted digit):",
        "",
        "| | " + " | ".join(str(d) for d in range(NUM_CLASSES)) + " |",
        "|---:|" + "---:|" * NUM_CLASSES,
    ]
    for digit in range(NUM_CLASSES):
        lines.append(f"| **{digit}** | " + " | ".join(str(int(v)) for v in evaluation.confusion[digit]) + " |")
    return "\n".join(lines) + "\n"


def write_report(evaluation: Evaluation, folder: Path) -> list[Path]:
    """Write ``report.md`` and ``confusion-matrix.png`` into ``folder``; both appear together or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".report-"))
    try:
        confusion_figure(evaluation).savefig(staging / CONFUSION_FILE)
        (staging / REPORT_FILE).write_text(markdown(evaluation), encoding="utf-8")
        written = []
        for name in (CONFUSION_FILE, REPORT_FILE):
            (staging / name).replace(folder / name)
            written.append(folder / name)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
