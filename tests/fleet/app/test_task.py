"""The shared task: data formats, the model, training, FedAvg/FedProx math, saving and loading."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fleet.app.data import DataError, Dataset, load_dataset, write_partition
from fleet.app.task import (
    ModelError,
    aggregate,
    build_model,
    evaluate,
    load_model,
    proximal_term,
    save_model,
    shifted,
    train,
    train_centrally,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    torch.set_num_threads(1)  # the suite runs on 2 workers; more threads only contend


@pytest.fixture(scope="module")
def digits_split() -> tuple[Dataset, Dataset]:
    from fleet.data import sklearn_digits

    data = sklearn_digits()
    order = np.random.default_rng(3).permutation(len(data.labels))
    train_idx, test_idx = order[:1200], order[1200:]
    return (
        Dataset(data.images[train_idx], data.labels[train_idx]),
        Dataset(data.images[test_idx], data.labels[test_idx]),
    )


def _write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


# --- data ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files_are_read_from_a_folder(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress=compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress=compress)

    data = load_dataset(tmp_path, cluster="lab")

    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.input_shape == (1, 28, 28)


def test_the_t10k_pair_is_read_when_asked_for(tmp_path: Path) -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([7, 2], dtype=np.uint8))
    assert load_dataset(tmp_path, idx_prefixes=("train", "t10k")).labels.tolist() == [7, 2]
    with pytest.raises(DataError, match="no partition file"):
        load_dataset(tmp_path)


def test_an_idx_file_whose_header_lies_is_refused(tmp_path: Path) -> None:
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), dtype=np.uint8))
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-10])
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match=r"cluster 'c1': .*train-images-idx3-ubyte: the header announces shape"):
        load_dataset(tmp_path, cluster="c1")


def test_an_idx_images_file_without_its_labels_is_named(tmp_path: Path) -> None:
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28), dtype=np.uint8), compress=True)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: expected this MNIST IDX file"):
        load_dataset(tmp_path)


def test_partition_files_round_trip_and_a_folder_of_them_concatenates(tmp_path: Path) -> None:
    first = Dataset(np.full((3, 8, 8), 10, np.uint8), np.array([0, 1, 2], np.uint8))
    second = Dataset(np.full((2, 8, 8), 200, np.uint8), np.array([9, 8], np.uint8))
    write_partition(tmp_path / "a.npz", *first)
    write_partition(tmp_path / "b.npz", *second)

    single = load_dataset(tmp_path / "a.npz")
    both = load_dataset(tmp_path)

    np.testing.assert_array_equal(single.images, first.images)
    assert both.labels.tolist() == [0, 1, 2, 9, 8]
    assert both.images.dtype == np.uint8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # no temporary file left


def test_missing_and_malformed_data_name_the_path_and_cluster(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"^cluster 'eu-lab': data path '{tmp_path / 'none'}' does not exist$"):
        load_dataset(tmp_path / "none", cluster="eu-lab")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"cluster 'eu-lab': data path .*empty' holds no partition file"):
        load_dataset(tmp_path / "empty", cluster="eu-lab")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cluster 'eu-lab': .*junk.npz: expected a partition file \(an .npz archive"):
        load_dataset(tmp_path / "junk.npz", cluster="eu-lab")
    np.savez(tmp_path / "floats.npz", images=np.zeros((2, 8, 8)), labels=np.zeros(2, np.uint8))
    with pytest.raises(DataError, match=r"expected 'images' of dtype uint8, got float64"):
        load_dataset(tmp_path / "floats.npz")
    np.savez(tmp_path / "shape.npz", images=np.zeros((2, 5, 5), np.uint8), labels=np.zeros(2, np.uint8))
    with pytest.raises(DataError, match=r"expected images of shape \(N, 8, 8\) or \(N, 28, 28\), got \(2, 5, 5\)"):
        load_dataset(tmp_path / "shape.npz")
    with pytest.raises(DataError, match="expected a data path, got an empty one"):
        load_dataset("", cluster="x")


# --- model and training -------------------------------------------------------------------------------------


def _arrays(model: torch.nn.Module) -> list[np.ndarray]:
    return [tensor.numpy() for tensor in model.state_dict().values()]


def test_the_model_follows_the_input_size_and_the_seed() -> None:
    small, large = build_model((1, 8, 8), seed=1), build_model((1, 28, 28), seed=1)
    assert small(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert large(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    for a, b in zip(_arrays(small), _arrays(build_model((1, 8, 8), seed=1)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_arrays(small)[0], _arrays(build_model((1, 8, 8), seed=2))[0])
    with pytest.raises(ValueError, match=r"expected an input shape \(1, 8, 8\) or \(1, 28, 28\)"):
        build_model((3, 32, 32))


def test_training_improves_accuracy_on_digits(digits_split: tuple[Dataset, Dataset]) -> None:
    train_data, test_data = digits_split
    model = build_model(train_data.input_shape, seed=0)
    before = evaluate(model, test_data)

    loss = train(model, train_data, epochs=2, learning_rate=0.05, batch_size=32, seed=0)
    after = evaluate(model, test_data)

    assert before.accuracy < 0.3
    assert after.accuracy > 0.85
    assert after.loss < before.loss
    assert 0 < loss < 2.5
    assert set(after.per_class_accuracy) == set(range(10))
    assert after.confusion.sum() == len(test_data.labels)


def test_shifted_moves_each_image_by_at_most_the_given_pixels() -> None:
    images = torch.zeros(400, 1, 28, 28)
    images[:, 0, 14, 14] = 1.0  # one lit pixel in the middle of each frame

    moved = shifted(images, 2, torch.Generator().manual_seed(3))
    again = shifted(images, 2, torch.Generator().manual_seed(3))

    assert moved.shape == images.shape
    assert torch.equal(moved, again)  # the seed decides
    lit = moved[:, 0].flatten(1).argmax(dim=1)
    offsets = {(int(i) // 28 - 14, int(i) % 28 - 14) for i in lit}
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # every move, none further
    assert torch.equal(moved.sum(dim=(1, 2, 3)), torch.ones(400))  # nothing lost or added


def test_the_shift_comes_in_as_background_at_the_edges() -> None:
    images = torch.ones(50, 1, 28, 28)
    moved = shifted(images, 2, torch.Generator().manual_seed(0))
    assert moved.min() == 0.0 and moved.max() == 1.0
    assert (moved.sum(dim=(1, 2, 3)) >= 24 * 24).all()  # at most two rows and two columns shifted out


def test_training_on_28x28_images_is_the_same_for_the_same_seed() -> None:
    rng = np.random.default_rng(0)
    data = Dataset(rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64).astype(np.uint8))
    models = [build_model(data.input_shape, seed=0) for _ in range(3)]
    for model, seed in zip(models, (5, 5, 6), strict=True):
        train(model, data, epochs=1, learning_rate=0.02, batch_size=16, seed=seed)
    weights = [torch.cat([p.detach().flatten() for p in model.parameters()]) for model in models]
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])  # another seed: other shuffles and other shifts


def test_evaluation_counts_per_digit() -> None:
    class Constant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(len(x), 10)
            logits[:, 3] = 1.0  # always predicts 3
            return logits

    data = Dataset(np.zeros((4, 8, 8), np.uint8), np.array([3, 3, 5, 3], np.uint8))
    result = evaluate(Constant(), data)
    assert result.accuracy == 0.75
    assert result.per_class_accuracy == {3: 1.0, 5: 0.0}
    assert result.confusion[5, 3] == 1 and result.confusion[3, 3] == 3
    assert result.metrics()["accuracy_5"] == 0.0


def test_fedavg_weights_each_update_by_its_examples() -> None:
    first = [np.array([1.0, 2.0]), np.array([[0.0]])]
    second = [np.array([3.0, 6.0]), np.array([[4.0]])]

    averaged = aggregate([(first, 100), (second, 300)])

    np.testing.assert_allclose(averaged[0], [2.5, 5.0])
    np.testing.assert_allclose(averaged[1], [[3.0]])
    np.testing.assert_allclose(aggregate([(first, 1)])[0], first[0])
    with pytest.raises(ValueError, match="expected updates of one model"):
        aggregate([(first, 1), ([np.zeros(3), np.zeros((1, 1))], 1)])
    with pytest.raises(ValueError, match="at least one update"):
        aggregate([])


def test_the_proximal_term_is_the_squared_distance_to_the_global_weights() -> None:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.copy_(torch.tensor([0.5]))
    reference = [torch.tensor([[0.0, 0.0]]), torch.tensor([0.0])]
    assert float(proximal_term(model, reference).detach()) == pytest.approx(1 + 4 + 0.25)


def test_fedprox_keeps_local_weights_near_the_global_ones(digits_split: tuple[Dataset, Dataset]) -> None:
    train_data, _ = digits_split
    skewed = Dataset(train_data.images[train_data.labels < 3], train_data.labels[train_data.labels < 3])
    start = build_model(skewed.input_shape, seed=0)
    distances = {}
    for mu in (0.0, 1.0):
        model = build_model(skewed.input_shape, seed=0)
        train(model, skewed, epochs=1, learning_rate=0.05, batch_size=32, proximal_mu=mu, seed=1)
        reference = [p.detach() for p in start.parameters()]
        distances[mu] = float(proximal_term(model, reference).detach())
    assert distances[1.0] < distances[0.0] * 0.8


def test_central_training_reports_accuracy_per_digit(digits_split: tuple[Dataset, Dataset]) -> None:
    train_data, test_data = digits_split
    fewer = Dataset(train_data.images[:500], train_data.labels[:500])
    result = train_centrally(fewer, test_data, epochs=2, learning_rate=0.05, batch_size=32, seed=0)
    assert result.epochs == 2 and result.num_examples == 500
    assert result.evaluation.accuracy > 0.7
    assert len(result.evaluation.per_class_accuracy) == 10


def test_a_saved_model_loads_without_the_run(tmp_path: Path, digits_split: tuple[Dataset, Dataset]) -> None:
    _, test_data = digits_split
    model = build_model((1, 8, 8), seed=5)
    save_model(tmp_path / "out" / "model.pt", model, (1, 8, 8))

    loaded, shape = load_model(tmp_path / "out" / "model.pt")

    assert shape == (1, 8, 8)
    assert evaluate(loaded, test_data).accuracy == evaluate(model, test_data).accuracy
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model.pt"]


def test_missing_or_corrupt_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model.pt: expected a model file saved by a fleet run, it does not exist"):
        load_model(tmp_path / "model.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="it is unreadable"):
        load_model(tmp_path / "junk.pt")
    torch.save({"architecture": "resnet"}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="expected architecture 'small-cnn', got 'resnet'"):
        load_model(tmp_path / "other.pt")
