"""The data a collaborator reads: numpy only, so that preparing or reading data never imports torch.

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
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from fleet.app.files import write_atomically

NUM_CLASSES = 10


class DataError(Exception):
    """A collaborator's data is missing, unreadable or malformed; the message names the path and cluster."""


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
        return checked(dataset)
    except DataError as error:
        raise DataError(f"{where}{error}" if str(location) in str(error) else f"{where}{location}: {error}") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(f"{where}data path {str(location)!r} is unreadable: {error}") from None


def write_partition(path: Path, images: NDArray[np.uint8], labels: NDArray[np.uint8]) -> None:
    """Write a partition file atomically (a temporary file renamed into place)."""
    checked(Dataset(images, labels))
    write_atomically(path, lambda file: np.savez_compressed(file, images=images, labels=labels))


def _read_file(path: Path, idx_prefixes: Sequence[str]) -> Dataset:
    if path.suffix == ".npz":
        return _read_npz(path)
    for prefix in idx_prefixes:
        for suffix in ("", ".gz"):
            if path.name == f"{prefix}-images-idx3-ubyte{suffix}":
                labels = path.with_name(f"{prefix}-labels-idx1-ubyte{suffix}")
                return Dataset(read_idx(path, 3), read_idx(labels, 1))
    raise DataError(f"{path}: expected a partition file (.npz) or a folder of data, got {path.name!r}")


def _read_folder(folder: Path, idx_prefixes: Sequence[str]) -> Dataset:
    for prefix in idx_prefixes:
        for suffix in ("", ".gz"):
            images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
            if images.is_file():
                labels = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
                return Dataset(read_idx(images, 3), read_idx(labels, 1))
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


def write_idx(path: Path, array: NDArray[np.uint8]) -> None:
    """Write ``array`` as an IDX file of unsigned bytes (the layout `read_idx` reads), atomically."""
    if array.dtype != np.uint8 or array.ndim == 0:
        raise ValueError(f"expected a uint8 array of at least one dimension, got {array.dtype} of shape {array.shape}")
    header = bytes((0, 0, _IDX_UBYTE, array.ndim)) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    body = np.ascontiguousarray(array).tobytes()
    write_atomically(path, lambda file: file.write(header + body))


def read_idx(path: Path, dimensions: int) -> NDArray[np.uint8]:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), ndim big-endian uint32 sizes, the data."""
    if not path.is_file():
        raise DataError(f"{path}: expected this MNIST IDX file next to its pair, it does not exist")
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        raw: bytes = file.read()
    return parse_idx(raw, dimensions, str(path))


def parse_idx(raw: bytes, dimensions: int, where: str) -> NDArray[np.uint8]:
    """The array an IDX file's bytes hold; `DataError` names ``where`` when they are not such a file."""
    if len(raw) < 4 + 4 * dimensions or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != dimensions:
        raise DataError(f"{where}: expected an IDX file of unsigned bytes with {dimensions} dimension(s)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dimensions)
    if body.size != math.prod(shape):
        raise DataError(f"{where}: the header announces shape {shape}, but holds {body.size} values")
    return body.reshape(shape).copy()


def checked(dataset: Dataset) -> Dataset:
    """``dataset`` itself when it is one the app can train on (N square 8x8 or 28x28 images, one label 0-9
    each); else `DataError` saying what was expected."""
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


def concatenate(datasets: Iterable[Dataset]) -> Dataset:
    parts = list(datasets)
    return Dataset(np.concatenate([d.images for d in parts]), np.concatenate([d.labels for d in parts]))
