"""examples/evaluate-model.ipynb runs top to bottom on a saved model (executed with nbclient)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from fleet.app.data import Dataset, write_partition
from fleet.app.task import build_model, save_model, train

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "evaluate-model.ipynb"


def _text(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )


def test_the_notebook_evaluates_a_saved_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.data import sklearn_digits

    data = sklearn_digits()
    train_data = Dataset(data.images[:600], data.labels[:600])
    model = build_model(train_data.input_shape, seed=0)
    train(model, train_data, epochs=1, learning_rate=0.05, batch_size=32)
    save_model(tmp_path / "model.pt", model, train_data.input_shape)
    write_partition(tmp_path / "test.npz", data.images[1600:], data.labels[1600:])
    monkeypatch.setenv("FLEET_MODEL", str(tmp_path / "model.pt"))
    monkeypatch.setenv("FLEET_TEST_DATA", str(tmp_path / "test.npz"))
    monkeypatch.setenv("MPLBACKEND", "Agg")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    text = _text(notebook)
    assert f"model: {tmp_path / 'model.pt'}" in text
    assert "test data: " in text and "(197 images)" in text
    assert "accuracy: 0." in text
    assert "weakest digit: " in text and "every digit at least 0.85: " in text
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 1  # the confusion matrix
    assert all(output.get("output_type") != "error" for cell in notebook.cells for output in cell.get("outputs", []))
