"""``fleet evaluate MODEL``: text and JSON outputs, the report folder, exit 2 on bad input."""

from __future__ import annotations

import json
import shutil
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


def _run_storage(folder: Path, model: Path) -> Path:
    """A run's storage: the model, its metrics.json (as the ServerApp writes it) and a model card."""
    from fleet.app.server_app import Progress, Settings

    folder.mkdir()
    shutil.copy(model, folder / "model.pt")
    progress = Progress(folder)
    progress.started(Settings(num_rounds=2, model_dir=folder))
    for number, accuracy in ((1, 0.8), (2, 0.9)):
        metrics = {"train_loss": 1 - accuracy, "accuracy": accuracy, "eval_loss": 1.2 - accuracy}
        progress.round(number, ["eu-a"], {**metrics, **{f"accuracy_{d}": accuracy for d in range(10)}}, [], {})
    (folder / "model-card.md").write_text("# Model card: x\n")
    return folder


def test_a_report_beside_a_runs_model_draws_its_curve_and_links_the_card(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    model, test = trained
    storage = _run_storage(tmp_path / "storage", model)
    args = ["evaluate", str(storage / "model.pt"), "--test-data", str(test), "--report", str(storage / "evaluation")]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 0, result.output
    names = ["confusion-matrix.png", "per-digit-accuracy.png", "report.md", "training-curve.png"]
    assert sorted(p.name for p in (storage / "evaluation").iterdir()) == names
    assert f"linked them from {storage / 'model-card.md'}" in result.output
    card = (storage / "model-card.md").read_text()
    assert card.startswith("# Model card: x\n") and "![training curve](evaluation/training-curve.png)" in card


def test_a_report_without_metrics_says_there_is_no_curve(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, test = trained
    result = CliRunner().invoke(main, ["evaluate", str(model), "--test-data", str(test), "--report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"no training curve: no metrics.json beside {model}" in result.output
    assert not (tmp_path / "training-curve.png").exists()


def test_bad_metrics_exit_2_and_write_nothing(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model, test = trained
    (tmp_path / "metrics.json").write_text('{"rounds": "none"}')
    args = ["evaluate", str(model), "--test-data", str(test), "--metrics", str(tmp_path / "metrics.json")]
    result = CliRunner().invoke(main, [*args, "--report", str(tmp_path / "report")])

    assert result.exit_code == 2
    assert f"fleet evaluate: {tmp_path / 'metrics.json'}: expected a 'rounds' list" in result.output
    assert not (tmp_path / "report").exists()
