"""fleet.evaluation: accuracy overall and per digit, the confusion matrix, the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fleet.app.data import write_partition
from fleet.app.task import build_model, save_model
from fleet.evaluation import EvaluationError, evaluate_model, markdown, write_report


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


def test_the_report_holds_the_table_and_the_confusion_matrix(files: tuple[Path, Path], tmp_path: Path) -> None:
    result = evaluate_model(*files)
    written = write_report(result, tmp_path / "report")

    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["confusion-matrix.png", "report.md"]
    assert written == [tmp_path / "report" / "confusion-matrix.png", tmp_path / "report" / "report.md"]
    assert (tmp_path / "report" / "confusion-matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"- accuracy: **{result.accuracy:.4f}**" in text
    assert "![confusion matrix](confusion-matrix.png)" in text
    assert text == markdown(result)
    assert text.count("\n| **") == 10  # one confusion-matrix row per digit


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
