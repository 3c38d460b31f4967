"""``fleet data prepare``: write the example clusters' private digits partitions and the held-out test split."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet.cli._options import DATA_ROOT, data_root_output_option, refuse_output_in_sources, repo_option
from fleet.errors import EXIT_INVALID, InvalidRepository


@click.group("data")
def command() -> None:
    """Prepare the data the collaborators train on."""


@command.command("prepare")
@repo_option
@data_root_output_option
@click.option(
    "--job",
    default=None,
    help="Write only the partitions of the clusters this job is placed on (its name, or its file under jobs/).",
)
def prepare_command(repo: Path, data_root: Path, job: str | None) -> None:
    """Split scikit-learn's digits among the clusters that claim dataset 'digits'.

    Each cluster gets exactly the samples its claim states, at <data-root>/<claimed path>/digits.npz, with a
    label skew: the cluster at position i (by name) over-represents digits 3i..3i+2 (mod 10). A stratified
    test split of 360 images that no collaborator sees goes to <data-root>/test/digits.npz. The output is the same
    on every run. Exit 2 for an invalid repository, an unknown job, or claims larger than the data.
    """
    from fleet.cli._repository import exit_with_problems, job_name, load_or_exit
    from fleet.data import prepare

    refuse_output_in_sources(
        repo,
        data_root,
        command="data prepare",
        option="--data-root",
        holding="the prepared data",
        example=DATA_ROOT,
        replaced_whole=False,
    )
    repository = load_or_exit(repo, "written")
    wanted = None if job is None else job_name(repository, job, "data prepare")
    if wanted is not None and wanted not in repository.jobs:
        # Said here, naming the option: `prepare` can only say that no file under jobs/ has that name.
        known = ", ".join(sorted(repository.jobs)) or "none"
        click.echo(
            f"fleet data prepare: --job: expected a job name ({known}), got {wanted!r}: no file under "
            f"{repository.root / 'jobs'} names it",
            err=True,
        )
        sys.exit(EXIT_INVALID)
    try:
        prepared = prepare(repository, data_root, wanted)
    except InvalidRepository as error:  # claims larger than the data
        exit_with_problems(error, repo, "written")

    header = f"{'cluster':<22} {'samples':>7}  {'favours':<7}  per digit 0-9"
    click.echo(f"wrote {prepared.test_path}: {sum(prepared.test_counts)} held-out test images (no cluster sees them)")
    click.echo(f"  per digit 0-9: {' '.join(f'{n:>3}' for n in prepared.test_counts)}")
    click.echo(header)
    for partition in prepared.partitions:
        favoured = ",".join(map(str, partition.favoured))
        counts = " ".join(f"{n:>3}" for n in partition.counts)
        click.echo(f"{partition.cluster:<22} {partition.samples:>7}  {favoured:<7}  {counts}")
        click.echo(f"  {partition.claimed_path} -> {partition.path}")
    if prepared.unused:
        click.echo(f"{prepared.unused} images are claimed by no cluster and were not written")
