"""Loading the repository for a command: every problem printed the same way, then exit 2; and naming a job
either by its name or by its file under ``jobs/``."""

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


def job_name(repository: Repository, argument: str, command: str) -> str:
    """The job ``argument`` names: a job's name, or the path of its file (``jobs/x.yaml``, as a shell completes
    it) taken from the working directory or the repository root. A path to no job file of the repository
    exits 2 saying what to pass; an unknown name is returned as it is, for the command to report."""
    if argument in repository.jobs or not _looks_like_a_path(argument):
        return argument
    wanted = {Path(argument).resolve(), (repository.root / argument).resolve()}
    for (kind, name), source in repository.sources.items():
        if kind == "Job" and (repository.root / source.file).resolve() in wanted:
            return name
    known = ", ".join(repository.jobs) or "none"
    click.echo(
        f"fleet {command}: {argument}: expected a job name (the `name:` in a file under "
        f"{repository.root / 'jobs'}) or the path of such a file; it is neither (jobs: {known})",
        err=True,
    )
    sys.exit(EXIT_INVALID)


def _looks_like_a_path(argument: str) -> bool:
    # A job name is a DNS label: no slash, no dot. Anything with one was meant as a file.
    return "/" in argument or "." in argument
