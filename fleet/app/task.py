"""What both sides of the Flower app share: the data a collaborator reads, the model, training and evaluation.

This module imports torch and numpy only, so that the ClientApp starts fast: every message a SuperNode
receives starts a new ClientApp process.

Data formats. A cluster claims a path (a file or a folder) for a dataset; the collaborator reads it as:

- a **partition file**: an ``.npz`` archive holding ``images`` (``uint8``, shape ``(N, H, W)``, grey
  levels 0-255, H = W = 8 or 28) and ``labels`` (``uint8``, shape ``(N,)``, digits 0-9). ``fleet data
  prepare`` writes these; `write_partition` is the one writer. A folder of them is read in name order and
  concatenated.
- **MNIST IDX files**: ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (each optionally
  ``.gz``) in the folder, as published by LeCun et al. A held-out split may instead use the ``t10k-`` pair.

A folder holding an IDX pair is read as IDX; otherwise as partition files.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

ARCHITECTURE = "small-cnn"
"""The only architecture: a small CNN whose size follows the input side (8x8 digits or 28x28 MNIST)."""
NUM_CLASSES = 10
_MODEL_FORMAT = 1


class DataError(Exception):
    """A collaborator's data is missing, unreadable or malformed; the message names the path and cluster."""


class ModelError(Exception):
    """A saved model file is missing, unreadable or not one `save_model` wrote."""


class Dataset(NamedTuple):
    images: NDArray[np.uint8]
    """(N, H, W) grey levels 0-255."""
    labels: NDArray[np.uint8]
    """(N,) digits 0-9."""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, int(self.images.shape[1]), int(self.images.shape[2]))


# --- data ---------------------------------------------------------------------------------------------------


def load_dataset(
    path: str | os.PathLike[str], *, cluster: str = "", idx_prefixes: Sequence[str] = ("train",)
) -> Dataset:
    """Read a partition file, a folder of them, or a folder holding an MNIST IDX pair (see the module
    docstring).

    ``idx_prefixes`` are the IDX pair names tried in order (``train``, ``t10k``). Raises `DataError` naming
    the path and ``cluster`` (when given) for anything missing, unreadable or malformed.
    """
    where = f"cluster {cluster!r}: " if cluster else ""
    location = Path(path)
    try:
        if not str(path):
            raise DataError("expected a data path, got an empty one")
        if not location.exists():
            raise DataError(f"data path {str(location)!r} does not exist")
        dataset = _read_file(location, idx_prefixes) if location.is_file() else _read_folder(location, idx_prefixes)
        return _checked(dataset)
    except DataError as error:
        raise DataError(f"{where}{error}" if str(location) in str(error) else f"{where}{location}: {error}") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(f"{where}data path {str(location)!r} is unreadable: {error}") from None


def write_partition(path: Path, images: NDArray[np.uint8], labels: NDArray[np.uint8]) -> None:
    """Write a partition file atomically (a temporary file renamed into place)."""
    _checked(Dataset(images, labels))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez_compressed(file, images=images, labels=labels)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_file(path: Path, idx_prefixes: Sequence[str]) -> Dataset:
    if path.suffix == ".npz":
        return _read_npz(path)
    for prefix in idx_prefixes:
        for suffix in ("", ".gz"):
            if path.name == f"{prefix}-images-idx3-ubyte{suffix}":
                labels = path.with_name(f"{prefix}-labels-idx1-ubyte{suffix}")
                return Dataset(_read_idx(path, 3), _read_idx(labels, 1))
    raise DataError(f"{path}: expected a partition file (.npz) or a folder of data, got {path.name!r}")


def _read_folder(folder: Path, idx_prefixes: Sequence[str]) -> Dataset:
    for prefix in idx_prefixes:
        for suffix in ("", ".gz"):
            images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
            if images.is_file():
                labels = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
                return Dataset(_read_idx(images, 3), _read_idx(labels, 1))
    parts = sorted(p for p in folder.iterdir() if p.suffix == ".npz" and p.is_file() and not p.name.startswith("."))
    if not parts:
        pairs = " or ".join(f"{p}-images-idx3-ubyte[.gz] with {p}-labels-idx1-ubyte[.gz]" for p in idx_prefixes)
        raise DataError(f"data path {str(folder)!r} holds no partition file (*.npz) and no MNIST IDX pair ({pairs})")
    datasets = [_read_npz(part) for part in parts]
    shapes = {d.images.shape[1:] for d in datasets}
    if len(shapes) > 1:
        raise DataError(f"data path {str(folder)!r} mixes image sizes {sorted(shapes)}")
    return Dataset(np.concatenate([d.images for d in datasets]), np.concatenate([d.labels for d in datasets]))


def _read_npz(path: Path) -> Dataset:
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: expected a partition file (an .npz archive of 'images' and 'labels'), it is not one")
    with np.load(path, allow_pickle=False) as archive:
        missing = {"images", "labels"} - set(archive.files)
        if missing:
            raise DataError(f"{path}: expected arrays 'images' and 'labels', missing {sorted(missing)}")
        images, labels = archive["images"], archive["labels"]
    for name, array in (("images", images), ("labels", labels)):
        if array.dtype != np.uint8:
            raise DataError(f"{path}: expected {name!r} of dtype uint8, got {array.dtype}")
    return Dataset(images, labels)


_IDX_UBYTE = 0x08


def _read_idx(path: Path, dimensions: int) -> NDArray[np.uint8]:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), ndim big-endian uint32 sizes, the data."""
    if not path.is_file():
        raise DataError(f"{path}: expected this MNIST IDX file next to its pair, it does not exist")
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        raw: bytes = file.read()
    if len(raw) < 4 + 4 * dimensions or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != dimensions:
        raise DataError(f"{path}: expected an IDX file of unsigned bytes with {dimensions} dimension(s)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dimensions)
    if body.size != math.prod(shape):
        raise DataError(f"{path}: the header announces shape {shape}, but holds {body.size} values")
    return body.reshape(shape).copy()


def _checked(dataset: Dataset) -> Dataset:
    images, labels = dataset
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.shape[1] not in (8, 28):
        raise DataError(f"expected images of shape (N, 8, 8) or (N, 28, 28), got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"expected one label per image ({images.shape[0]}), got labels of shape {labels.shape}")
    if images.shape[0] == 0:
        raise DataError("expected at least one sample, got none")
    if int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"expected labels 0-{NUM_CLASSES - 1}, got {int(labels.max())}")
    return dataset


# --- model --------------------------------------------------------------------------------------------------


# Grey-level mean and standard deviation per input side (scikit-learn's digits; MNIST's training set): the
# model standardises its input itself, so a saved model needs no separate preprocessing.
_INPUT_STATISTICS = {8: (0.3053, 0.3759), 28: (0.1307, 0.3081)}


class SmallCNN(nn.Module):
    """Two 3x3 convolutions (32 and 64 channels) and a dense head of 128; 28x28 inputs are pooled once more.

    Narrower variants trained faster but left some digits below 0.85 under the label skew of ``fleet data
    prepare`` after 5 federated rounds."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.mean, self.std = _INPUT_STATISTICS[side]
        early_pool = [nn.MaxPool2d(2)] if side >= 16 else []
        final = side // (4 if early_pool else 2)
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            *early_pool,
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * final * final, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.classifier(self.features((x - self.mean) / self.std))
        return result


def build_model(input_shape: Sequence[int], *, seed: int = 0) -> nn.Module:
    """A freshly initialised model for inputs of ``input_shape`` (1, side, side); the same seed gives the same
    weights, so collaborators that start without the server's weights still start from one model."""
    channels, height, width = (int(v) for v in input_shape)
    if channels != 1 or height != width or height not in (8, 28):
        raise ValueError(f"expected an input shape (1, 8, 8) or (1, 28, 28), got {tuple(input_shape)}")
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return SmallCNN(height)
    finally:
        torch.random.set_rng_state(generator_state)


def get_weights(model: nn.Module) -> list[NDArray[Any]]:
    return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[NDArray[Any]]) -> None:
    keys = list(model.state_dict().keys())
    if len(keys) != len(weights):
        raise ValueError(f"expected {len(keys)} arrays for the model, got {len(weights)}")
    state = {}
    for key, (name, current), array in zip(keys, model.state_dict().items(), weights, strict=True):
        if tuple(current.shape) != tuple(array.shape):
            raise ValueError(f"expected {name} of shape {tuple(current.shape)}, got {tuple(array.shape)}")
        state[key] = torch.as_tensor(np.asarray(array), dtype=current.dtype)
    model.load_state_dict(state)


def save_model(path: Path, model: nn.Module, input_shape: Sequence[int]) -> None:
    """Save the weights with the architecture name and input shape, so `load_model` needs nothing else."""
    payload = {
        "format": _MODEL_FORMAT,
        "architecture": ARCHITECTURE,
        "input_shape": [int(v) for v in input_shape],
        "num_classes": NUM_CLASSES,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, tuple[int, int, int]]:
    """The model `save_model` wrote, and its input shape; `ModelError` if it is missing or not such a file."""
    location = Path(path)
    if not location.is_file():
        raise ModelError(f"{location}: expected a model file saved by a fleet run, it does not exist")
    try:
        payload = torch.load(location, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt file (pickle, zip, runtime)
        raise ModelError(f"{location}: expected a model file saved by a fleet run, it is unreadable: {error}") from None
    if not isinstance(payload, dict) or payload.get("architecture") != ARCHITECTURE:
        found = payload.get("architecture") if isinstance(payload, dict) else type(payload).__name__
        raise ModelError(f"{location}: expected architecture {ARCHITECTURE!r}, got {found!r}")
    try:
        shape = tuple(int(v) for v in payload["input_shape"])
        model = build_model(shape)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelError(f"{location}: expected a state dict matching {ARCHITECTURE!r}: {error}") from None
    model.eval()
    return model, (shape[0], shape[1], shape[2])


# --- training and evaluation --------------------------------------------------------------------------------


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Images scaled to [0, 1] with a channel axis, and labels as class indices."""
    images = torch.from_numpy(dataset.images.astype(np.float32) / 255.0).unsqueeze(1)
    return images, torch.from_numpy(dataset.labels.astype(np.int64))


def proximal_term(model: nn.Module, reference: Sequence[torch.Tensor]) -> torch.Tensor:
    """FedProx's ``sum ||w - w_global||^2`` over the trainable parameters (Li et al., 2020)."""
    terms = [((p - r) ** 2).sum() for p, r in zip(model.parameters(), reference, strict=True)]
    return torch.stack(terms).sum()


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> float:
    """Train in place with SGD (momentum 0.9); with ``proximal_mu`` > 0 add FedProx's ``mu/2 * ||w - w0||^2``
    towards the starting weights. Returns the mean cross-entropy over all local steps."""
    images, labels = as_tensors(dataset)
    reference = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    total, seen = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(images[batch]), labels[batch])
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
            if proximal_mu > 0:
                loss = loss + proximal_mu / 2 * proximal_term(model, reference)
            loss.backward()
            optimizer.step()
    return total / max(seen, 1)


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    per_class_accuracy: dict[int, float]
    """Digit -> accuracy on that digit's samples (digits absent from the data are left out)."""
    confusion: NDArray[np.int64] = field(repr=False)
    """confusion[true, predicted] counts."""
    num_examples: int

    def metrics(self) -> dict[str, float]:
        """Flat metrics: ``loss``, ``accuracy`` and ``accuracy_<digit>``."""
        flat = {"loss": self.loss, "accuracy": self.accuracy}
        flat.update({f"accuracy_{digit}": value for digit, value in self.per_class_accuracy.items()})
        return flat


def evaluate(model: nn.Module, dataset: Dataset) -> Evaluation:
    images, labels = as_tensors(dataset)
    model.eval()
    with torch.no_grad():
        logits = model(images)
        loss = float(nn.functional.cross_entropy(logits, labels))
    predicted = logits.argmax(dim=1).numpy()
    truth = labels.numpy()
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {
        digit: float(confusion[digit, digit] / confusion[digit].sum())
        for digit in range(NUM_CLASSES)
        if confusion[digit].sum() > 0
    }
    accuracy = float(np.trace(confusion) / confusion.sum())
    return Evaluation(loss, accuracy, per_class, confusion, len(truth))


def aggregate(updates: Iterable[tuple[Sequence[NDArray[Any]], int]]) -> list[NDArray[np.float32]]:
    """FedAvg: the average of each array over the updates, weighted by their number of examples.

    FedProx aggregates the same way; it differs only in the clients' proximal term."""
    collected = list(updates)
    if not collected:
        raise ValueError("expected at least one update to aggregate")
    total = sum(n for _, n in collected)
    if total <= 0:
        raise ValueError("expected updates with a positive number of examples")
    first = collected[0][0]
    for arrays, _ in collected[1:]:
        shapes = [a.shape for a in arrays]
        if shapes != [a.shape for a in first]:
            raise ValueError(f"expected updates of one model, got array shapes {[a.shape for a in first]} and {shapes}")
    return [
        np.sum([np.asarray(arrays[i], dtype=np.float64) * (n / total) for arrays, n in collected], axis=0).astype(
            np.float32
        )
        for i in range(len(first))
    ]


@dataclass(frozen=True)
class CentralResult:
    """Training on all the data in one place: the anchor federated results are compared against."""

    evaluation: Evaluation
    epochs: int
    num_examples: int
    model: nn.Module = field(repr=False)


def train_centrally(
    train_data: Dataset,
    test_data: Dataset,
    *,
    epochs: int,
    learning_rate: float = 0.05,
    batch_size: int = 32,
    seed: int = 0,
) -> CentralResult:
    """Train one model on ``train_data`` for ``epochs`` (rounds x local epochs matches a federated run)
    and evaluate it on ``test_data``."""
    model = build_model(train_data.input_shape, seed=seed)
    train(model, train_data, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed)
    return CentralResult(evaluate(model, test_data), epochs, len(train_data.labels), model)


def concatenate(datasets: Iterable[Dataset]) -> Dataset:
    parts = list(datasets)
    return Dataset(np.concatenate([d.images for d in parts]), np.concatenate([d.labels for d in parts]))
