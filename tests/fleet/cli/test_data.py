"""``fleet data prepare``: what it prints, what it writes, and exit 2 on bad input."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fleet.cli import main


def test_prepare_writes_and_prints_every_partition(example_repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    result = CliRunner().invoke(main, ["data", "prepare", "--repo", str(example_repo), "--data-root", str(root)])

    assert result.exit_code == 0, result.output
    assert f"wrote {root / 'test' / 'digits.npz'}: 360 held-out test images" in result.output
    assert "eu-west-hospital           500  3,4,5" in result.output
    assert f"/srv/datasets/digits -> {root / 'srv' / 'datasets' / 'digits' / 'digits.npz'}" in result.output
    assert (root / "data" / "digits" / "us-east-clinic" / "digits.npz").is_file()


def test_prepare_for_a_job_writes_its_clusters_only(example_repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    args = ["data", "prepare", "--repo", str(example_repo), "--data-root", str(root), "--job", "mnist-digits"]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 0, result.output
    assert "us-east-clinic" not in result.output
    assert not (root / "data" / "digits" / "us-east-clinic").exists()


def test_an_unknown_job_exits_2(example_repo: Path, tmp_path: Path) -> None:
    args = ["data", "prepare", "--repo", str(example_repo), "--data-root", str(tmp_path / "d"), "--job", "nope"]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 2
    assert "expected a job name (mnist-digits), got 'nope'" in result.output
    assert not (tmp_path / "d").exists()


def test_too_many_claimed_samples_exit_2_naming_file_and_field(example_repo: Path, tmp_path: Path) -> None:
    cluster_file = example_repo / "clusters" / "eu-central-lab.yaml"
    cluster_file.write_text(cluster_file.read_text().replace("samples: 450", "samples: 451"))
    result = CliRunner().invoke(
        main, ["data", "prepare", "--repo", str(example_repo), "--data-root", str(tmp_path / "d")]
    )

    assert result.exit_code == 2
    assert "clusters/eu-west-hospital.yaml" in result.output  # the largest claim is where to cut
    assert "datasets.digits.samples: expected the clusters' claims on dataset 'digits' to sum to at most 1437" in (
        result.output
    )
    assert not (tmp_path / "d").exists()
