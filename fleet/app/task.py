"""What both sides of the Flower app share: the data a collaborator reads, the model, training and evaluation.

This module imports torch and numpy only, so that the ClientApp starts fast: every message a SuperNode
receives starts a new ClientApp process.
The data it trains on is read by `fleet.app.data`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fleet.app.data import NUM_CLASSES, Dataset
from fleet.app.files import write_atomically

ARCHITECTURE = "small-cnn"
"""The only architecture: a small CNN whose size follows the input side (8x8 digits or 28x28 MNIST)."""
_MODEL_FORMAT = 1


class ModelError(Exception):
    """A saved model file is missing, unreadable or not one `save_model` wrote."""


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


def save_model(path: Path, model: nn.Module, input_shape: Sequence[int]) -> None:
    """Save the weights with the architecture name and input shape, so `load_model` needs nothing else."""
    payload = {
        "format": _MODEL_FORMAT,
        "architecture": ARCHITECTURE,
        "input_shape": [int(v) for v in input_shape],
        "num_classes": NUM_CLASSES,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    write_atomically(path, lambda file: torch.save(payload, file))


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, tuple[int, int, int]]:
    """The model `save_model` wrote, and its input shape; `ModelError` if it is missing or not such a file."""
    location = Path(path)
    if not location.is_file():
        if location.is_dir():
            what = "it is a folder"
        else:
            what = "it is not a regular file" if location.exists() else "it does not exist"
        raise ModelError(f"{location}: expected a model file saved by a fleet run, {what}")
    try:
        payload = torch.load(location, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt file (pickle, zip, runtime)
        raise ModelError(
            f"{location}: expected a model file saved by a fleet run, it is unreadable (torch cannot read it as a "
            f"PyTorch state dict: {_torch_reason(error)})"
        ) from None
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


def _torch_reason(error: Exception) -> str:
    """The gist of why ``torch.load`` failed, in one short line. Its weights-only errors advise loading with
    ``weights_only=False``, which runs whatever code the file holds: only the unpickler's own reason is kept."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # The first sentence: what follows it is advice to allow more of the file ("add_safe_globals").
    reason = lines[0].split(". ", 1)[0].rstrip(".") if lines else ""
    if not reason or "weights_only" in reason:
        return "the file ends early" if isinstance(error, EOFError) else type(error).__name__
    return reason


# --- training and evaluation --------------------------------------------------------------------------------


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Images scaled to [0, 1] with a channel axis, and labels as class indices."""
    images = torch.from_numpy(dataset.images.astype(np.float32) / 255.0).unsqueeze(1)
    return images, torch.from_numpy(dataset.labels.astype(np.int64))


def proximal_term(model: nn.Module, reference: Sequence[torch.Tensor]) -> torch.Tensor:
    """FedProx's ``sum ||w - w_global||^2`` over the trainable parameters (Li et al., 2020)."""
    terms = [((p - r) ** 2).sum() for p, r in zip(model.parameters(), reference, strict=True)]
    return torch.stack(terms).sum()


SHIFT_PIXELS = {8: 0, 28: 2}
"""How far `train` moves each training image, at most, per input side. MNIST digits sit centred in a 20x20 box
of their 28x28 frame, so moves of 2 pixels keep them whole; on the 10,000 MNIST digits of the example they
lifted held-out accuracy from 0.975 to 0.983 (every digit from 0.949 to 0.968). An 8x8 digit fills its frame:
none."""


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
    """Train in place with SGD (momentum 0.9), each image moved by up to `SHIFT_PIXELS` in each direction
    (drawn anew per step, from ``seed``); with ``proximal_mu`` > 0 add FedProx's ``mu/2 * ||w - w0||^2``
    towards the starting weights. Returns the mean cross-entropy over all local steps."""
    images, labels = as_tensors(dataset)
    shift = SHIFT_PIXELS[dataset.input_shape[1]]
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
            inputs = shifted(images[batch], shift, generator) if shift else images[batch]
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), labels[batch])
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
            if proximal_mu > 0:
                loss = loss + proximal_mu / 2 * proximal_term(model, reference)
            loss.backward()
            optimizer.step()
    return total / max(seen, 1)


def shifted(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each of ``images`` (N, 1, H, W) moved by its own random offset of up to ``pixels`` rows and columns,
    background (zeros) coming in at the edges."""
    count, _, height, width = images.shape
    padded = nn.functional.pad(images, (pixels, pixels, pixels, pixels))
    down = torch.randint(0, 2 * pixels + 1, (count,), generator=generator)
    right = torch.randint(0, 2 * pixels + 1, (count,), generator=generator)
    rows = (down[:, None] + torch.arange(height))[:, :, None]
    columns = (right[:, None] + torch.arange(width))[:, None, :]
    return padded[torch.arange(count)[:, None, None], 0, rows, columns].unsqueeze(1)


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
        """Flat metrics, as a round reports them: ``accuracy``, ``eval_loss`` and ``accuracy_<digit>``."""
        flat = {"accuracy": self.accuracy, "eval_loss": self.loss}
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
