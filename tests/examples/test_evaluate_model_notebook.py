"""examples/evaluate-model.ipynb runs top to bottom on an MNIST model and its run's metrics (executed with
nbclient)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient

from fleet import mnist
from fleet.app.data import Dataset, write_partition
from fleet.app.server_app import Progress, Settings
from fleet.app.task import build_model, evaluate, save_model, train

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "evaluate-model.ipynb"


def _text(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )


@pytest.fixture
def storage(tmp_path: Path, mnist_cache: Path) -> Path:
    """A small MNIST model trained for two "rounds" of one epoch, with the metrics.json the ServerApp would write
    (its own Progress), and 500 held-out digits: what a run's storage and `fleet data prepare` leave."""
    torch.set_num_threads(1)
    data = mnist.load(mnist_cache)
    order = np.random.default_rng(0).permutation(len(data.labels))
    train_data = Dataset(data.images[order[:1500]], data.labels[order[:1500]])
    test_data = Dataset(data.images[order[1500:2000]], data.labels[order[1500:2000]])
    folder = tmp_path / "storage"
    progress = Progress(folder)
    progress.started(Settings(num_rounds=2, model_dir=folder))
    model = build_model(train_data.input_shape, seed=0)
    for number in (1, 2):
        loss = train(model, train_data, epochs=1, learning_rate=0.02, batch_size=32, seed=number)
        progress.round(number, ["local"], {"train_loss": loss, **evaluate(model, test_data).metrics()}, [], {})
    save_model(folder / "model.pt", model, train_data.input_shape)
    write_partition(tmp_path / "test.npz", *test_data)
    return folder


def test_the_notebook_evaluates_an_mnist_model_and_draws_its_run(
    storage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_MODEL", str(storage / "model.pt"))
    monkeypatch.setenv("FLEET_TEST_DATA", str(tmp_path / "test.npz"))
    monkeypatch.delenv("FLEET_METRICS", raising=False)  # the default: metrics.json beside the model
    monkeypatch.setenv("MPLBACKEND", "Agg")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    assert all(output.get("output_type") != "error" for cell in notebook.cells for output in cell.get("outputs", []))
    text = _text(notebook)
    assert f"model: {storage / 'model.pt'}" in text and f"metrics: {storage / 'metrics.json'}" in text
    assert "(28x28 images)" in text and "(500 images)" in text
    assert "accuracy: 0.9" in text  # 1500 real digits, two epochs: far above chance, short of the example
    assert "weakest digit: " in text and "every digit at least 0.95: " in text
    assert "round 1: accuracy 0." in text and "round 2: accuracy 0." in text and "lowest digit 0." in text
    assert "images misclassified" in text
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == 4  # per-digit accuracy, confusion matrix, training curve, misclassified digits
