"""``fleet render`` on bad input: exit 2, every problem on stderr as file:line, field and expectation, and
nothing written (no output folder, or the previous one untouched)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fleet.cli import main
from fleet.errors import EXIT_INVALID
from tests.fleet.test_repository import CASES, Expected

# A subset of the loader's cases covering each kind, the YAML itself and the checks across files.
CLI_CASES = [
    "job-unknown-field",
    "job-missing-required-field",
    "job-quantity-with-space",
    "job-rounds-string",
    "job-framework-enum",
    "job-storage-pvc-and-s3",
    "yaml-duplicate-key",
    "yaml-invalid",
    "yaml-nested-too-deep",
    "yaml-empty-file",
    "cluster-label-value",
    "cluster-too-many-dataset-claims",
    "policy-in-without-values",
    "policy-dataset-typo",
    "cross-duplicate-cluster-name",
    "cross-dataset-no-cluster-holds",
    "cross-too-few-eligible-by-region-policy",
    "cross-tls-off-on-governed-dataset",
    "several-errors-in-several-files",
]


def _render(repo: Path, *extra: str) -> Result:
    return CliRunner().invoke(main, ["render", "--repo", str(repo), "--out", str(repo / "manifests"), *extra])


def _where(repo: Path, expected: Expected) -> str:
    """How the CLI names the place of a problem: ``file:line: field: `` (line and field when known)."""
    where = expected.file
    if expected.marker is not None:
        lines = (repo / expected.file).read_text(encoding="utf-8").splitlines()
        where += f":{next(n for n, text in enumerate(lines, 1) if expected.marker in text)}"
    return f"{where}: {expected.field}: " if expected.field else f"{where}: "


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_reported(repo: Path, result: Result, expected: tuple[Expected, ...]) -> None:
    assert result.exit_code == EXIT_INVALID, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    for want in expected:
        prefix = _where(repo, want)
        matching = [line for line in lines if prefix in line]
        assert matching, f"no line naming {prefix!r} on stderr:\n{result.stderr}"
        assert any(all(phrase in line for phrase in want.phrases) for line in matching), result.stderr
    assert "wrote" not in result.stdout


def test_the_subset_is_large_enough() -> None:
    assert len(CLI_CASES) >= 10
    assert set(CLI_CASES) <= set(CASES)


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_input_exits_2_names_the_problem_and_writes_nothing(example_repo: Path, case: str) -> None:
    edit, expected = CASES[case]
    edit(example_repo)

    result = _render(example_repo)

    assert_reported(example_repo, result, expected)
    assert not (example_repo / "manifests").exists()
    assert not [p for p in example_repo.iterdir() if p.name not in ("jobs", "clusters", "policies")]


@pytest.mark.parametrize("case", ["job-rounds-string", "cross-tls-off-on-governed-dataset", "yaml-two-documents"])
def test_bad_input_leaves_existing_output_untouched(example_repo: Path, case: str) -> None:
    out = example_repo / "manifests"
    (out / "hub" / "demo").mkdir(parents=True)
    (out / "hub" / "demo" / "namespace.yaml").write_text("apiVersion: v1\nkind: Namespace\n")
    (out / "stale.yaml").write_text("kind: Old\n")
    before = _tree(out)
    edit, _ = CASES[case]
    edit(example_repo)

    result = _render(example_repo)

    assert result.exit_code == EXIT_INVALID, result.output
    assert _tree(out) == before
    assert sorted(p.name for p in example_repo.iterdir()) == ["clusters", "jobs", "manifests", "policies"]


def test_check_on_bad_input_exits_2_not_1(example_repo: Path) -> None:
    edit, expected = CASES["job-framework-enum"]
    edit(example_repo)

    result = _render(example_repo, "--check")

    assert_reported(example_repo, result, expected)
    assert not (example_repo / "manifests").exists()


def test_every_problem_is_counted_on_stderr(example_repo: Path) -> None:
    edit, expected = CASES["several-errors-in-several-files"]
    edit(example_repo)

    result = _render(example_repo)

    assert result.exit_code == EXIT_INVALID
    assert f"{len(expected)} problem(s)" in result.stderr
