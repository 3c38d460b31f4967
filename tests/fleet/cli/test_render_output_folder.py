"""``fleet render`` replaces only a folder of its own, and every command refuses a ``--repo`` that is not one.

Each refusal exits 2, says why, and leaves every file where it was (the whole tree is compared byte for byte).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fleet.cli import main
from fleet.errors import EXIT_INVALID
from render.output import MARKER

Setup = Callable[[Path], Path]
"""Prepares the case under the test's folder (the example repository is ``<tmp>/repo``); returns ``--out``."""


def _tree(folder: Path) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[relative] = f"-> {path.readlink()}"
        elif path.is_file():
            found[relative] = path.read_bytes()
    return found


def _render(repo: Path, out: Path, cwd: Path) -> Result:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, ["render", "--repo", str(repo), "--out", str(out)])
    finally:
        os.chdir(old)


def _with(files: dict[str, str], marker: bool = False) -> Setup:
    def setup(tmp: Path) -> Path:
        out = tmp / "elsewhere"
        for relative, text in files.items():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            (out / relative).write_text(text)
        if marker:
            (out / MARKER).write_text("fleet\n")
        return out

    return setup


def _linked(tmp: Path) -> Path:
    out = _with({"hub/a.yaml": "a: 1\n"}, marker=True)(tmp)
    (tmp / "precious").mkdir()
    (tmp / "precious" / "notes.yaml").write_text("mine: 1\n")
    (out / "hub" / "link").symlink_to(tmp / "precious", target_is_directory=True)
    return out


REFUSED: dict[str, tuple[Setup, str]] = {
    "the-repository-root": (lambda tmp: tmp / "repo", "not the repository"),
    "the-current-folder-as-dot": (lambda tmp: Path(), "not the repository"),
    "a-folder-holding-the-repository": (lambda tmp: tmp, "not the repository"),
    "inside-dot-git": (lambda tmp: tmp / "repo" / ".git" / "manifests", "its .git"),
    "the-jobs-folder": (lambda tmp: tmp / "repo" / "jobs", "jobs, clusters, policies"),
    "inside-the-policies-folder": (lambda tmp: tmp / "repo" / "policies" / "out", "jobs, clusters, policies"),
    "a-folder-with-a-readme": (_with({"README.md": "# mine\n"}), "README.md"),
    "yaml-outside-the-targets-without-marker": (_with({"notes.yaml": "a: 1\n"}), "notes.yaml"),
    "target-yaml-and-a-foreign-file": (_with({"hub/a.yaml": "a: 1\n", "hub/keep.txt": "x\n"}), "hub/keep.txt"),
    "a-foreign-file-beside-the-marker": (_with({"hub/a.yaml": "a: 1\n", "deploy.sh": "x\n"}, True), "deploy.sh"),
    "a-symlink-to-a-folder-elsewhere": (_linked, "hub/link"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_folder_render_does_not_own_is_refused_and_kept(example_repo: Path, case: str) -> None:
    tmp = example_repo.parent
    (example_repo / ".git").mkdir()
    (example_repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (example_repo / "README.md").write_text("# the repository\n")
    setup, phrase = REFUSED[case]
    out = setup(tmp)
    cwd = example_repo if out == Path() else tmp
    before = _tree(tmp)

    result = _render(example_repo, out, cwd)

    assert result.exit_code == EXIT_INVALID, result.output
    assert phrase in result.stderr and "nothing was written" in result.stderr, result.stderr
    assert "wrote" not in result.stdout
    assert _tree(tmp) == before


def test_an_empty_folder_is_filled_and_marked(example_repo: Path) -> None:
    out = example_repo.parent / "empty"
    out.mkdir()
    result = _render(example_repo, out, example_repo.parent)
    assert result.exit_code == 0, result.output
    assert (out / MARKER).is_file() and (out / "hub").is_dir()


def test_a_render_from_before_the_marker_is_replaced_stale_files_and_all(example_repo: Path) -> None:
    out = example_repo / "manifests"
    (out / "hub" / "old").mkdir(parents=True)
    (out / "hub" / "old" / "placement-gone.yaml").write_text("kind: Placement\n")
    result = _render(example_repo, out, example_repo.parent)
    assert result.exit_code == 0, result.output
    assert not (out / "hub" / "old").exists() and (out / MARKER).is_file()


def test_a_marked_folder_is_replaced_as_a_whole(example_repo: Path) -> None:
    out = example_repo / "manifests"
    assert _render(example_repo, out, example_repo.parent).exit_code == 0
    (out / "hub" / "stale.yaml").write_text("kind: ConfigMap\n")
    first = _tree(out)
    assert _render(example_repo, out, example_repo.parent).exit_code == 0
    assert _tree(out) == {k: v for k, v in first.items() if k != "hub/stale.yaml"}


# --- --repo -----------------------------------------------------------------------------------------------------

COMMANDS_WITH_REPO = {
    "render": ["render"],
    "plan": ["plan"],
    "run": ["run", "mnist-digits"],
    "data prepare": ["data", "prepare"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS_WITH_REPO))
@pytest.mark.parametrize("repo", ["missing", "empty", "a-file"])
def test_every_command_refuses_what_is_not_a_fleet_repository(tmp_path: Path, command: str, repo: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("jobs: []\n")
    before = _tree(tmp_path)
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(main, [*COMMANDS_WITH_REPO[command], "--repo", str(tmp_path / repo)])
    finally:
        os.chdir(old)
    assert result.exit_code == EXIT_INVALID, result.output
    expected = {"missing": "no such folder", "empty": "it has none", "a-file": "is a file"}[repo]
    assert expected in result.stderr and "--repo" in result.stderr, result.stderr
    assert _tree(tmp_path) == before
