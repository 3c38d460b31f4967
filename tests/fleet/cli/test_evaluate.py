"""``fleet evaluate MODEL``: text and JSON outputs, the report folder, exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fleet.app.data import Dataset, write_partition
from fleet.app.task import build_model, save_model, train
from fleet.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model trained briefly on part of scikit-learn's digits, and a disjoint test split."""
    from fleet.data import sklearn_digits

    data = sklearn_digits()
    folder = tmp_path_factory.mktemp("evaluate")
    train_data = Dataset(data.images[:800], data.labels[:800])
    model = build_model(train_data.input_shape, seed=0)
    train(model, train_data, epochs=2, learning_rate=0.05, batch_size=32)
    save_model(folder / "model.pt", model, train_data.input_shape)
    write_partition(folder / "test.npz", data.images[1500:], data.labels[1500:])
    return folder / "model.pt", folder / "test.npz"


def test_text_output_lists_accuracy_per_digit(trained: tuple[Path, Path]) -> None:
    model, test = trained
    result = CliRunner().invoke(main, ["evaluate", str(model), "--test-data", str(test)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"model: {model} (8x8 images)"
    assert lines[1] == f"test data: {test} (297 images)"
    assert lines[2].startswith("accuracy: 0.")
    assert [line.split()[0] for line in lines[4:14]] == [str(d) for d in range(10)]


def test_json_output_has_accuracy_and_per_class_accuracy(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, test = trained
    args = ["evaluate", str(model), "--test-data", str(test), "--output", "json", "--report", str(tmp_path / "r")]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"accuracy", "per_class_accuracy"}
    assert sorted(payload["per_class_accuracy"], key=int) == [str(d) for d in range(10)]
    assert payload["accuracy"] > 0.8  # trained on 800 images, far above chance
    per_digit = np.array(list(payload["per_class_accuracy"].values()))
    assert ((per_digit >= 0) & (per_digit <= 1)).all()
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "confusion-matrix.png").is_file()


def test_a_missing_model_exits_2(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, test = trained
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "none.pt"), "--test-data", str(test)])
    assert result.exit_code == 2
    assert (
        "fleet evaluate: " in result.output and "none.pt: expected a model file saved by a fleet run" in result.output
    )


def test_a_corrupt_model_exits_2(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, test = trained
    (tmp_path / "broken.pt").write_bytes(b"\x00" * 64)
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "broken.pt"), "--test-data", str(test)])
    assert result.exit_code == 2
    assert "broken.pt: expected a model file saved by a fleet run, it is unreadable" in result.output


def test_missing_default_test_data_says_how_to_make_it(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = trained
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["evaluate", str(model)])
    assert result.exit_code == 2
    assert "test data: data path '.fleet/data/test/digits.npz' does not exist" in result.output
    assert "run `fleet data prepare`" in result.output
