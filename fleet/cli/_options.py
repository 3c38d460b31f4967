"""Options several commands share, declared once: the repository, the local data and run folders, the base
of a diff; and the checks of the folders commands write into. Light on purpose: every command module imports it
when ``fleet`` starts."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fleet.errors import EXIT_INVALID

F = TypeVar("F", bound=Callable[..., Any])

DATA_ROOT = Path(".fleet") / "data"
"""Where `fleet data prepare` writes, and `fleet run` reads, the clusters' claimed paths on this machine."""
WORK_DIR = Path(".fleet") / "runs"
"""Where `fleet run` keeps each job's status, credentials, logs and storage."""

SOURCE_FOLDERS = ("jobs", "clusters", "policies")


def _fleet_repository(context: click.Context, parameter: click.Parameter, value: Path) -> Path:
    """Refuse what is not a fleet repository before any command reads it or writes beside it."""
    if not value.is_dir():
        raise click.BadParameter(f"{value}: expected a fleet repository folder; there is no such folder")
    if not any((value / folder).is_dir() for folder in SOURCE_FOLDERS):
        raise click.BadParameter(
            f"{value}: expected a fleet repository, a folder holding jobs/, clusters/ or policies/; it has none"
        )
    return value


def output_folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (made) a folder, or None: the closest entry that exists on the way to it must be a
    folder. Checked before any work, so that a command never renders or trains only to fail at its first write."""
    for entry in (path, *path.parents):
        if entry.is_dir():
            return None
        if os.path.lexists(entry):
            what = "a link to nothing" if entry.is_symlink() and not entry.exists() else "a file"
            return f"{path}: expected a folder (or a path where one can be made); {entry} is {what}"
    return None


class OutputFolder(click.Path):
    """A folder a command writes into: one that exists, or a path where one can be made (no file on the way)."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = Path(os.fsdecode(super().convert(value, param, ctx)))  # refuses an existing file, as click.Path does
        problem = output_folder_problem(path)
        if problem is not None:
            self.fail(problem, param, ctx)
        return path


def refuse_output_in_sources(
    repo: Path, out: Path, *, command: str, option: str, holding: str, example: Path, replaced_whole: bool
) -> None:
    """Exit 2, before anything is written, when the output folder ``out`` lies in the repository's .git or its
    source folders (the loader refuses anything but definitions there, so the repository would no longer load);
    with ``replaced_whole``, also when it is the repository or holds it (replacing it would delete what people
    wrote). ``holding``: what the folder is for ("the manifests"); ``example``: a good choice to show."""
    root, target = repo.resolve(), out.resolve()
    protected = [root / name for name in (".git", *SOURCE_FOLDERS)]
    inside = any(target.is_relative_to(folder) for folder in protected)
    if inside or (replaced_whole and (target == root or root.is_relative_to(target))):
        where = "the repository, its .git" if replaced_whole else "inside the repository's .git"
        click.echo(
            f"fleet {command}: {option} {out}: expected a folder of its own for {holding} (such as {example}), "
            f"not {where} or its {', '.join(SOURCE_FOLDERS)} folders; nothing was written",
            err=True,
        )
        sys.exit(EXIT_INVALID)


repo_option = click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    callback=_fleet_repository,
    help="The repository holding jobs/, clusters/ and policies/.",
)
_DATA_ROOT_HELP = "The local folder the clusters' claimed data paths are mapped under."
data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DATA_ROOT,
    show_default=True,
    help=_DATA_ROOT_HELP,
)
data_root_output_option = click.option(
    "--data-root", type=OutputFolder(), default=DATA_ROOT, show_default=True, help=_DATA_ROOT_HELP
)
"""``--data-root`` where a command writes the data (`fleet data prepare`)."""
base_option = click.option(
    "--base", default=None, help="With --diff: the git ref.  [default: merge base with main, else HEAD]"
)


def work_dir_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--work-dir",
        type=OutputFolder(),
        default=WORK_DIR,
        show_default=True,
        help=help,
    )
