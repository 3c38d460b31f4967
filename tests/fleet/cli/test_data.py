"""``fleet data prepare`` and ``fleet data fetch-mnist``: what they print, what they write, and their exits on bad
input."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from fleet import mnist
from fleet.cli import main


def _prepare(example_repo: Path, root: Path, cache: Path, *more: str) -> list[str]:
    return ["data", "prepare", "--repo", str(example_repo), "--data-root", str(root), "--cache-dir", str(cache), *more]


def test_prepare_writes_and_prints_every_partition(example_repo: Path, tmp_path: Path, mnist_cache: Path) -> None:
    root = tmp_path / "data"
    result = CliRunner().invoke(main, _prepare(example_repo, root, mnist_cache))

    assert result.exit_code == 0, result.output
    assert f"wrote {root / 'test' / 'digits.npz'}: 2000 held-out test images" in result.output
    assert "eu-west-hospital          2600  3,4,5" in result.output
    assert f"/srv/datasets/digits -> {root / 'srv' / 'datasets' / 'digits' / 'digits.npz'}" in result.output
    assert (root / "data" / "digits" / "us-east-clinic" / "digits.npz").is_file()


def test_prepare_for_a_job_writes_its_clusters_only(example_repo: Path, tmp_path: Path, mnist_cache: Path) -> None:
    root = tmp_path / "data"
    result = CliRunner().invoke(main, _prepare(example_repo, root, mnist_cache, "--job", "mnist-digits"))

    assert result.exit_code == 0, result.output
    assert "us-east-clinic" not in result.output
    assert not (root / "data" / "digits" / "us-east-clinic").exists()


def test_an_unknown_job_exits_2(example_repo: Path, tmp_path: Path) -> None:
    args = ["data", "prepare", "--repo", str(example_repo), "--data-root", str(tmp_path / "d"), "--job", "nope"]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 2
    assert "expected a job name (mnist-digits, mnist-digits-openfl), got 'nope'" in result.output
    assert not (tmp_path / "d").exists()


def test_too_many_claimed_samples_exit_2_naming_file_and_field(
    example_repo: Path, tmp_path: Path, mnist_cache: Path
) -> None:
    cluster_file = example_repo / "clusters" / "eu-central-lab.yaml"
    cluster_file.write_text(cluster_file.read_text().replace("samples: 2400", "samples: 2401"))
    result = CliRunner().invoke(main, _prepare(example_repo, tmp_path / "d", mnist_cache))

    assert result.exit_code == 2
    assert "clusters/eu-west-hospital.yaml" in result.output  # the largest claim is where to cut
    assert "datasets.digits.samples: expected the clusters' claims on dataset 'digits' to sum to at most 8000" in (
        result.output
    )
    assert not (tmp_path / "d").exists()


def test_a_missing_or_altered_cache_exits_2_naming_the_file_and_the_fix(
    example_repo: Path, tmp_path: Path, mnist_cache: Path
) -> None:
    missing = CliRunner().invoke(main, _prepare(example_repo, tmp_path / "d", tmp_path / "none"))
    altered = Path(shutil.copytree(mnist_cache, tmp_path / "altered"))
    (altered / mnist.LABELS_FILE).write_bytes(b"\x00" * 10_008)
    tampered = CliRunner().invoke(main, _prepare(example_repo, tmp_path / "d", altered))

    assert missing.exit_code == tampered.exit_code == 2
    assert f"{tmp_path / 'none' / mnist.IMAGES_FILE}: expected the MNIST cache file" in missing.output
    assert f"{altered / mnist.LABELS_FILE}: expected sha256 " in tampered.output
    for result in (missing, tampered):
        assert "run `fleet data fetch-mnist`" in result.output and "nothing was written" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "d").exists()


def test_fetch_mnist_on_an_intact_cache_only_checks_it(tmp_path: Path, mnist_cache: Path) -> None:
    cache = Path(shutil.copytree(mnist_cache, tmp_path / "cache"))
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    result = CliRunner().invoke(main, ["data", "fetch-mnist", "--cache-dir", str(cache)])

    assert result.exit_code == 0, result.output
    assert result.output == f"{cache}: 10000 MNIST digits, verified; nothing to fetch\n"
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before


def test_fetch_mnist_refuses_a_cache_folder_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    result = CliRunner().invoke(main, ["data", "fetch-mnist", "--cache-dir", str(tmp_path / "plain" / "cache")])
    assert result.exit_code == 2
    assert "--cache-dir" in result.output
