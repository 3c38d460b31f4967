"""Options several commands share, declared once: the repository, the local data and run folders, the base
of a diff. Light on purpose: every command module imports it when ``fleet`` starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

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


repo_option = click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    callback=_fleet_repository,
    help="The repository holding jobs/, clusters/ and policies/.",
)
data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DATA_ROOT,
    show_default=True,
    help="The local folder the clusters' claimed data paths are mapped under.",
)
base_option = click.option(
    "--base", default=None, help="With --diff: the git ref.  [default: merge base with main, else HEAD]"
)


def work_dir_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--work-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=WORK_DIR,
        show_default=True,
        help=help,
    )
