"""``fleet render``: the repository -> validated hub manifests, one file per resource."""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fleet.cli._options import (
    OutputFolder,
    base_option,
    output_folder_problem,
    refuse_output_in_sources,
    repo_option,
)
from fleet.errors import EXIT_INVALID

if TYPE_CHECKING:  # imported in the command, once the renderer has begun to start
    from fleet.repository import Repository

EXIT_STALE = 1


@click.command("render")
@repo_option
@click.option(
    "--out",
    "out",
    type=OutputFolder(),
    default=None,
    help="Output folder, replaced as a whole.  [default: <repo>/manifests]",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 when the committed output differs from a fresh render.",
)
@click.option(
    "--crds",
    "crds",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Upstream CRDs to validate against.  [default: $FLEET_CRDS_DIR, else <repo>/../shared/crds]",
)
@click.option("--diff", is_flag=True, help="Write nothing; show how the manifests differ from --base's.")
@base_option
@click.option("--output", type=click.Choice(["text", "markdown"]), default="text", help="With --diff.")
def command(
    repo: Path, out: Path | None, check: bool, crds: Path | None, diff: bool, base: str | None, output: str
) -> None:
    """Render jobs/, clusters/ and policies/ into hub manifests, validate them, and write them.

    Targets: manifests/hub (this project's controller) and manifests/upstream (the upstream OCM
    federated-learning controller). Exit 2 when the repository or the rendered output is invalid (nothing is
    written then); with --check, exit 1 when the committed output is stale.
    """
    if diff and check:
        raise click.UsageError(
            "--diff and --check exclude each other: --diff compares with a git ref, --check "
            "with the committed manifests"
        )
    if not diff and (base is not None or output != "text"):
        given = "--base" if base is not None else "--output"
        raise click.UsageError(f"{given} goes with --diff")
    if out is None:
        out = repo / "manifests"
        problem = output_folder_problem(out)  # a given --out is checked by its type; the default is not
        if problem is not None and not diff:
            raise click.BadParameter(problem, param_hint="'--out'")
    if not check and not diff:
        refuse_output_in_sources(
            repo,
            out,
            command="render",
            option="--out",
            holding="the manifests",
            example=repo / "manifests",
            replaced_whole=True,
        )
    repository = _load_without_collecting(repo)
    try:
        _render_repository(repository, repo, out, check, crds, diff, base, output)
    finally:
        gc.unfreeze()  # a caller in the same process (the tests) gets every object back into collection


def _load_without_collecting(repo: Path) -> Repository:
    """The repository, loaded while the renderer starts on a thread, with the cyclic garbage collector off.

    Starting up makes hundreds of thousands of objects that live as long as the process (modules, the models'
    validators, the repository): the collector would scan them again and again for nothing (0.2 s of CPU in the
    example's render). They are frozen afterwards, so that later collections skip them."""
    gc.disable()
    try:
        renderer = _start_renderer()
        from fleet.cli._repository import load_or_exit

        try:
            repository = load_or_exit(repo, "written")
        except SystemExit:
            renderer.join()  # exit after jsii has registered the stop of its Node process, never while it starts
            raise
        gc.freeze()
    finally:
        gc.enable()
    return repository


def _render_repository(
    repository: Repository,
    repo: Path,
    out: Path,
    check: bool,
    crds: Path | None,
    diff: bool,
    base: str | None,
    output: str,
) -> None:
    if diff:
        from fleet.diff import run_render_diff  # exits 0 no change, 1 changes, 2 errors (as kubectl diff)

        sys.exit(run_render_diff(repo, lambda: render_and_validate(repository, crds), base, output))
    files = render_and_validate(repository, crds)

    from render.output import FolderNotOwned, stale_files, write_tree

    if check:
        stale = stale_files(files, out)
        if stale:
            click.echo(f"{out}: {len(stale)} file(s) differ from a fresh render; run `fleet render`:", err=True)
            for path in stale:
                click.echo(f"  {path}", err=True)
            sys.exit(EXIT_STALE)
        click.echo(f"{out}: up to date ({len(files)} files)")
        return
    try:
        write_tree(files, out)
    except FolderNotOwned as error:
        click.echo(f"fleet render: {error}; nothing was written (choose another --out)", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"wrote {len(files)} manifests to {out}")


def _start_renderer() -> threading.Thread:
    """Import the renderer on a thread: jsii starts Node and loads cdk8s into it (0.35 s, mostly waiting for Node)
    while this thread imports the models and loads the repository; ``import render`` waits for it to finish."""
    thread = threading.Thread(target=_import_renderer, name="fleet-render-cdk8s", daemon=True)
    thread.start()
    return thread


def _import_renderer() -> None:
    with contextlib.suppress(Exception):  # a broken install: the command's own `import render` says so, once
        importlib.import_module("render")


def render_and_validate(repository: Repository, crds: Path | None) -> dict[str, str]:
    """Every target's files (``<target>/<path>`` -> YAML); exits 2 when a rendered manifest is invalid."""
    import render
    from fleet.validation import default_crds_dir, validate_documents
    from render.output import render_files

    trees = render.synth_all(repository)
    for job in repository.jobs.values():
        if job.privacy.enabled:
            # Said on every render: the upstream controller would train the job without its privacy options.
            click.echo(
                f"note: {repository.source(job).file}: privacy: the upstream target leaves job {job.name!r} out "
                "(the upstream FederatedLearning cannot carry privacy options; its controller would train "
                "without them)",
                err=True,
            )
    documents = [(f"{target}/{m.path}", m.body) for target, manifests in trees.items() for m in manifests]
    crds_dir = default_crds_dir(repository.root, crds)
    if not crds_dir.is_dir():
        click.echo(
            f"warning: no upstream CRDs at {crds_dir} (set --crds or FLEET_CRDS_DIR): "
            "OCM, policy, Argo CD and Flux kinds are not validated",
            err=True,
        )
    report = validate_documents(documents, crds_dir if crds_dir.is_dir() else None)
    if not report.ok:
        click.echo("the rendered manifests are invalid; nothing was written:", err=True)
        for line in report.lines():
            click.echo(f"  {line}", err=True)
        click.echo(report.summary(), err=True)
        sys.exit(EXIT_INVALID)
    return render_files(trees)
