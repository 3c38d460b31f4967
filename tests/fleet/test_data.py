"""fleet.data: the example clusters' partitions and the held-out split, from scikit-learn's digits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fleet.app.data import load_dataset
from fleet.data import TEST_SAMPLES, digits, favoured_digits, pooled, prepare
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
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    prepare(load_repository(ROOT), root)
    return root


def _rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def test_each_cluster_gets_exactly_its_claimed_samples_at_its_claimed_path(prepared: Path) -> None:
    claims = {"eu-central-lab": 450, "eu-west-hospital": 500, "eu-west-university": 400, "us-east-clinic": 87}
    for cluster, relative in EXAMPLE_PATHS.items():
        data = load_dataset(prepared / relative)
        assert len(data.labels) == claims[cluster]
        assert data.images.shape[1:] == (8, 8)
        assert data.images.dtype == np.uint8 and data.images.max() == 255
    assert len(load_dataset(prepared / "test" / "digits.npz").labels) == TEST_SAMPLES


def test_the_test_split_is_stratified_and_disjoint_from_every_partition(prepared: Path) -> None:
    test = load_dataset(prepared / "test" / "digits.npz")
    assert np.bincount(test.labels, minlength=10).min() >= 35  # 360 / 10, stratified
    everything = digits()
    # scikit-learn's digits hold a few identical images; count by position in the set instead of by content.
    index = {}
    for i, image in enumerate(everything.images):
        index.setdefault((image.tobytes(), int(everything.labels[i])), []).append(i)
    used: list[int] = []
    for relative in ["test/digits.npz", *EXAMPLE_PATHS.values()]:
        data = load_dataset(prepared / relative)
        for image, label in zip(data.images, data.labels, strict=True):
            used.append(index[(image.tobytes(), int(label))].pop())
    assert len(used) == len(set(used)) == 1797  # every image once: disjoint, and the claims sum to 1437


def test_each_cluster_over_represents_its_favoured_digits_and_holds_every_digit(prepared: Path) -> None:
    for position, (_cluster, relative) in enumerate(sorted(EXAMPLE_PATHS.items())):
        counts = np.bincount(load_dataset(prepared / relative).labels, minlength=10)
        shares = counts / counts.sum()
        favoured = list(favoured_digits(position))
        others = [d for d in range(10) if d not in favoured]
        assert shares[favoured].min() > 1.5 * shares[others].max(), (position, counts)
        assert counts.min() >= 1, counts
    assert favoured_digits(0) == (0, 1, 2) and favoured_digits(3) == (9, 0, 1)


def test_the_output_is_the_same_on_every_run(prepared: Path, tmp_path: Path) -> None:
    prepare(load_repository(ROOT), tmp_path)
    for relative in ["test/digits.npz", *EXAMPLE_PATHS.values()]:
        first, second = load_dataset(prepared / relative), load_dataset(tmp_path / relative)
        assert hashlib.sha256(first.images.tobytes()).digest() == hashlib.sha256(second.images.tobytes()).digest()
        np.testing.assert_array_equal(first.labels, second.labels)


def test_with_a_job_only_its_placed_clusters_are_written(tmp_path: Path) -> None:
    result = prepare(load_repository(ROOT), tmp_path, job="mnist-digits")
    assert [p.cluster for p in result.partitions] == ["eu-central-lab", "eu-west-hospital", "eu-west-university"]
    assert not (tmp_path / EXAMPLE_PATHS["us-east-clinic"]).exists()
    # The same cluster gets the same data whether or not a job was named.
    assert result.partitions[0].counts == (86, 87, 93, 23, 22, 23, 26, 25, 25, 40)


def test_claims_beyond_the_data_fail_naming_the_cluster_file_and_field(example_repo: Path, tmp_path: Path) -> None:
    cluster_file = example_repo / "clusters" / "eu-west-hospital.yaml"
    cluster_file.write_text(cluster_file.read_text().replace("samples: 500", "samples: 900"))

    with pytest.raises(InvalidRepository) as raised:
        prepare(load_repository(example_repo), tmp_path / "out")

    (problem,) = raised.value.problems
    assert problem.file == "clusters/eu-west-hospital.yaml"
    assert problem.field == "datasets.digits.samples"
    assert "sum to at most 1437" in problem.message and "but they sum to 1837" in problem.message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("claimed", "reported", "taken_by"),
    [
        ("/test", "eu-central-lab", "the held-out split"),
        ("/data/digits//eu-west-hospital/./", "eu-west-hospital", "eu-central-lab"),  # the same folder
    ],
)
def test_a_path_already_taken_fails_naming_the_cluster_file_and_field(
    example_repo: Path, tmp_path: Path, claimed: str, reported: str, taken_by: str
) -> None:
    cluster_file = example_repo / "clusters" / "eu-central-lab.yaml"
    cluster_file.write_text(cluster_file.read_text().replace("path: /data/digits/eu-central-lab", f"path: {claimed}"))

    with pytest.raises(InvalidRepository) as raised:
        prepare(load_repository(example_repo), tmp_path / "out")

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
    assert len(everything.labels) == 1437
    assert np.bincount(everything.labels, minlength=10).min() > 100
