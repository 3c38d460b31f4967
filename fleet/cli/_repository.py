"""Loading the repository for a command: every problem printed the same way, then exit 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from fleet.errors import EXIT_INVALID, InvalidRepository
from fleet.repository import Repository, load_repository


def load_or_exit(repo: Path, consequence: str) -> Repository:
    """The repository at ``repo``; on problems, print them all and exit 2 (``consequence``: "written", "run")."""
    try:
        return load_repository(repo)
    except InvalidRepository as error:
        exit_with_problems(error, repo, consequence)


def exit_with_problems(error: InvalidRepository, repo: Path, consequence: str) -> NoReturn:
    click.echo(f"{len(error.problems)} problem(s) in {repo}: nothing was {consequence}", err=True)
    for problem in error.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(EXIT_INVALID)
