"""fleet.evaluation: accuracy overall and per digit, the confusion matrix, the report."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fleet.app.data import write_partition
from fleet.app.server_app import Progress, Settings
from fleet.app.task import build_model, save_model
from fleet.evaluation import (
    CURVE_FILE,
    EvaluationError,
    History,
    evaluate_model,
    link_in_model_card,
    markdown,
    read_history,
    write_report,
)


class _Always(torch.nn.Module):
    """Predicts ``digit`` for every image."""

    def __init__(self, digit: int) -> None:
        super().__init__()
        self.digit = digit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, self.digit] = 1.0
        return logits


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    model_path = tmp_path / "model.pt"
    save_model(model_path, build_model((1, 8, 8), seed=0), (1, 8, 8))
    test_path = tmp_path / "test.npz"
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 1, 3], dtype=np.uint8)
    write_partition(test_path, rng.integers(0, 255, (6, 8, 8), dtype=np.uint8), labels)
    return model_path, test_path


def test_accuracy_per_digit_follows_the_predictions(files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    model_path, test_path = files
    import fleet.evaluation

    monkeypatch.setattr(fleet.evaluation, "load_model", lambda _path: (_Always(1), (1, 8, 8)))

    result = evaluate_model(model_path, test_path)

    assert result.accuracy == 0.5
    assert result.per_class_accuracy == {0: 0.0, 1: 1.0, 3: 0.0}
    assert result.to_json() == {"accuracy": 0.5, "per_class_accuracy": {"0": 0.0, "1": 1.0, "3": 0.0}}
    assert result.confusion[0, 1] == 2 and result.confusion[3, 1] == 1 and result.num_examples == 6
    lines = result.lines()
    assert lines[2] == "accuracy: 0.5000"
    assert lines[4].split() == ["0", "0.0000", "2", "1", "(2x)"]
    assert lines[6].split() == ["2", "-", "0", "-"]  # no 2 in the test data


def test_the_report_holds_the_table_and_the_pictures(files: tuple[Path, Path], tmp_path: Path) -> None:
    result = evaluate_model(*files)
    written = write_report(result, tmp_path / "report")

    names = ["confusion-matrix.png", "per-digit-accuracy.png", "report.md"]
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == names
    assert written == [tmp_path / "report" / name for name in names]
    for picture in ("confusion-matrix.png", "per-digit-accuracy.png"):
        assert (tmp_path / "report" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"- accuracy: **{result.accuracy:.4f}**" in text
    assert (
        "![confusion matrix](confusion-matrix.png)" in text and "![per-digit accuracy](per-digit-accuracy.png)" in text
    )
    assert "training curve" not in text
    assert text == markdown(result)
    assert text.count("\n| **") == 10  # one confusion-matrix row per digit


def _metrics(folder: Path, rounds: list[dict[str, float]]) -> Path:
    """A metrics.json as the ServerApp writes it (its own Progress), for the given per-round metrics."""
    progress = Progress(folder)
    progress.started(Settings(num_rounds=len(rounds), model_dir=folder))
    for number, metrics in enumerate(rounds, 1):
        progress.round(number, ["eu-a", "eu-b"], metrics, [], {"round": 1.0})
    progress.completed(rounds[-1])
    return folder / "metrics.json"


def _round(accuracy: float, lowest: float, loss: float) -> dict[str, float]:
    per_digit = {f"accuracy_{d}": accuracy for d in range(10)}
    per_digit["accuracy_7"] = lowest
    return {"train_loss": 2 * loss, "accuracy": accuracy, "eval_loss": loss, **per_digit}


def test_the_history_is_read_from_a_runs_metrics(tmp_path: Path) -> None:
    path = _metrics(tmp_path, [_round(0.9, 0.8, 0.4), _round(0.95, 0.93, 0.2), _round(0.97, 0.96, 0.1)])

    history = read_history(path)

    assert history.rounds == (1, 2, 3)
    assert history.accuracy == (0.9, 0.95, 0.97)
    assert history.lowest_digit == (0.8, 0.93, 0.96)
    assert history.eval_loss == (0.4, 0.2, 0.1) and history.train_loss == (0.8, 0.4, 0.2)


def test_without_per_digit_metrics_the_lowest_digit_is_unknown(tmp_path: Path) -> None:
    path = _metrics(tmp_path, [{"train_loss": 0.5, "accuracy": 0.9, "eval_loss": 0.3}])
    assert math.isnan(read_history(path).lowest_digit[0])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "expected the metrics.json a fleet run writes, it does not exist"),
        ("{not json", "expected the metrics.json a fleet run writes, it is unreadable"),
        ('{"rounds": []}', "expected a 'rounds' list with one entry per completed round, found none"),
        ('{"rounds": [{"round": "one", "metrics": {}}]}', "rounds[0]: expected {'round': <n>, 'metrics': {...}}"),
    ],
)
def test_metrics_that_are_not_a_runs_are_named(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(EvaluationError, match=re.escape(f"{path}: {expected}")):
        read_history(path)


def test_with_a_history_the_report_draws_the_training_curve(files: tuple[Path, Path], tmp_path: Path) -> None:
    history = read_history(_metrics(tmp_path, [_round(0.9, 0.8, 0.4), _round(0.95, 0.93, 0.2)]))
    result = evaluate_model(*files)

    written = write_report(result, tmp_path / "report", history)

    assert tmp_path / "report" / CURVE_FILE in written
    assert (tmp_path / "report" / CURVE_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"![training curve]({CURVE_FILE})" in text
    assert "| 2 | 0.9500 | 0.9300 | 0.2000 | 0.4000 |" in text
    # A later report of a model without a history leaves no curve of another run behind.
    write_report(result, tmp_path / "report")
    assert not (tmp_path / "report" / CURVE_FILE).exists()


def test_the_model_card_links_the_report_and_its_pictures(files: tuple[Path, Path], tmp_path: Path) -> None:
    card = tmp_path / "storage" / "model-card.md"
    card.parent.mkdir()
    card.write_text("# Model card: example\n\n## Final metrics\n\n| accuracy | 0.9 |\n")
    history = History(tmp_path / "metrics.json", (1,), (0.9,), (0.3,), (0.5,), (0.8,))
    result = evaluate_model(*files)
    written = write_report(result, tmp_path / "storage" / "evaluation", history)

    link_in_model_card(card, result, written)
    first = card.read_text()
    link_in_model_card(card, result, written)  # a second evaluation replaces the section

    assert card.read_text() == first
    assert first.startswith("# Model card: example\n\n## Final metrics\n\n| accuracy | 0.9 |\n\n")
    assert first.count("## Evaluation") == 1
    for title, name in [
        ("training curve", "training-curve.png"),
        ("per-digit accuracy", "per-digit-accuracy.png"),
        ("confusion matrix", "confusion-matrix.png"),
    ]:
        assert f"![{title}](evaluation/{name})" in first
    assert "[evaluation/report.md](evaluation/report.md)" in first
    assert f"accuracy **{result.accuracy:.4f}**" in first
    shown = [f"{result.per_class_accuracy[d]:.4f}" if d in result.per_class_accuracy else "-" for d in range(10)]
    assert "| accuracy | " + " | ".join(shown) + " |" in first
    assert shown[2] == "-"  # no 2 in the test data


def test_the_file_names_are_those_a_run_writes() -> None:
    from fleet.app.server_app import METRICS_FILE
    from fleet.evaluation import METRICS_FILE as READ
    from fleet.evaluation import MODEL_CARD_FILE
    from fleet.federation.local import MODEL_CARD

    assert (READ, MODEL_CARD_FILE) == (METRICS_FILE, MODEL_CARD)


def test_missing_or_corrupt_inputs_are_evaluation_errors(files: tuple[Path, Path], tmp_path: Path) -> None:
    model_path, test_path = files
    with pytest.raises(EvaluationError, match=r"nope\.pt: expected a model file saved by a fleet run"):
        evaluate_model(tmp_path / "nope.pt", test_path)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(EvaluationError, match=r"^test data: .*bad.npz: expected a partition file"):
        evaluate_model(model_path, tmp_path / "bad.npz")
    mnist = tmp_path / "mnist.npz"
    write_partition(mnist, np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(EvaluationError, match=r"mnist.npz: expected 8x8 images for the model .*, got 28x28"):
        evaluate_model(model_path, mnist)
