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

repo_option = click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
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
