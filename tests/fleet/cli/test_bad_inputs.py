"""Every command on bad input: the exit code, a message naming the file (or option), the field and what was
expected, no traceback, and nothing written.

Part 1 runs each of the loader's cases (``tests/fleet/test_repository.py``'s CASES, edits of the example's files)
through every command that loads the repository. Part 2 misuses each command's arguments and the other files it
reads. Each case starts from a private copy of the example with its committed manifests, the prepared data in
``.fleet/data`` and a completed earlier run in ``.fleet/runs``, run from the repository's folder; "nothing
written" compares a snapshot of the case's whole folder (the repository, its .git, manifests/ and .fleet/, and
every folder given outside it) before and after, modification times included.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fleet.cli import main
from fleet.models import FederatedLearningStatus, Phase, RoundStatus
from tests.conftest import ROOT
from tests.fleet import test_repository
from tests.fleet.cli.bad_inputs_support import (
    Bad,
    Call,
    Context,
    ProcessStartedError,
    assert_no_traceback,
    changes,
    describe,
    no_process_starts,
    snapshot,
    violations,
)
from tests.fleet.cli.test_render_bad_input import assert_reported
from tests.fleet.deadline import deadline
from tests.fleet.test_repository import CASES, JOB

SECRET: str | None = getattr(test_repository, "SECRET", None)
"""A value only files outside the repository hold (cases that link out of it): no output may echo it."""

RUN_REFUSAL_SECONDS = 10.0
"""A `fleet run` refused on bad input answers in well under this (a run that starts takes longer)."""

# --- the workspace -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once: the example's prepared data, model files good and bad."""
    import torch

    from fleet.app.task import build_model, save_model
    from fleet.data import prepare
    from fleet.repository import load_repository

    folder = tmp_path_factory.mktemp("bad-input-assets")
    example = folder / "example"
    for name in ("jobs", "clusters", "policies"):
        shutil.copytree(ROOT / name, example / name)
    prepare(load_repository(example), folder / "data")

    save_model(folder / "model.pt", build_model((1, 8, 8)), (1, 8, 8))
    save_model(folder / "model-28.pt", build_model((1, 28, 28)), (1, 28, 28))
    payload = torch.load(folder / "model.pt", weights_only=True)
    torch.save({**payload, "state_dict": {k: v[:1] for k, v in payload["state_dict"].items()}}, folder / "cut.pt")
    torch.save({**payload, "input_shape": [1, 9, 9]}, folder / "model-9x9.pt")
    torch.save({"weights": torch.zeros(3)}, folder / "not-fleets.pt")
    torch.save(torch.zeros(3), folder / "tensor.pt")
    return folder


@pytest.fixture
def workspace(example_repo: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    repo = example_repo
    shutil.copytree(ROOT / "manifests", repo / "manifests")
    shutil.copytree(assets / "data", repo / ".fleet" / "data")
    earlier = repo / ".fleet" / "runs" / "mnist-digits"
    status = FederatedLearningStatus(
        phase=Phase.COMPLETED,
        current_round=5,
        total_rounds=5,
        participating_clusters=("eu-central-lab", "eu-west-hospital"),
        rounds=(RoundStatus(round=5, metrics={"accuracy": 0.93}),),
        final_metrics={"accuracy": 0.93},
    )
    (earlier / "storage" / "models" / "mnist-digits").mkdir(parents=True)
    (earlier / "storage" / "models" / "mnist-digits" / "model.pt").write_bytes(b"the model of the earlier run\n")
    (earlier / "status.json").write_text(json.dumps(status.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    monkeypatch.chdir(repo)
    for variable in ("FLEET_CRDS_DIR", "GITHUB_BASE_REF"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(repo.parent / "no-kubeconfig"))  # never the machine's own
    context = Context(repo.parent, repo, assets)
    yield context
    context.release()


# --- part 1: every loader case through every command that loads the repository -------------------------------

LOADING: dict[str, list[str]] = {
    "render": ["render"],
    "plan": ["plan"],
    "run": ["run", "mnist-digits"],
    "data-prepare": ["data", "prepare"],
}


@pytest.mark.parametrize("command", [pytest.param(name, id=name) for name in LOADING])
@pytest.mark.parametrize("case", [pytest.param(name, id=name) for name in sorted(CASES)])
def test_a_bad_repository_is_refused_by_every_command_that_loads_it(
    workspace: Context, monkeypatch: pytest.MonkeyPatch, case: str, command: str
) -> None:
    edit, expected = CASES[case]
    edit(workspace.repo)
    before = snapshot(workspace.tmp)

    with no_process_starts(monkeypatch), deadline(60):
        started = time.monotonic()
        result = CliRunner().invoke(main, [*LOADING[command], "--repo", str(workspace.repo)])
        seconds = time.monotonic() - started

    assert not isinstance(result.exception, ProcessStartedError), describe(result)
    assert_no_traceback(result)
    assert_reported(workspace.repo, result, expected)
    assert f"{len(expected)} problem(s) in " in result.stderr and "nothing was " in result.stderr, describe(result)
    assert SECRET is None or SECRET not in result.output
    assert changes(before, snapshot(workspace.tmp)) == [], describe(result)
    if command == "run":
        assert seconds < RUN_REFUSAL_SECONDS, f"fleet run took {seconds:.1f} s to refuse"


# --- part 2: misused arguments and the other files commands read ---------------------------------------------

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: fl-demo\n"
PLACEMENT = (
    "apiVersion: cluster.open-cluster-management.io/v1beta1\nkind: Placement\n"
    "metadata:\n  name: demo\n  namespace: fl-demo\nspec:\n  numberOfClusters: 2\n"
)
GOOD_STATUS = json.dumps(
    FederatedLearningStatus(phase=Phase.COMPLETED, final_metrics={"accuracy": 0.9}).model_dump(
        mode="json", by_alias=True
    )
)
NOT_FOUND = 1
"""`fleet status JOB`'s exit code when JOB has no status (not bad input: nothing to show)."""
INVALID_RESOURCE = 1
"""`fleet validate`'s exit code when a resource is invalid or cannot be validated."""
BARE_JOB_NAME = re.compile(r"(?<![/\w-])mnist-digits(?![\w.-])")
"""The job's name on its own, not inside a path: the message points to the name to use."""
MODEL = "expected a model file saved by a fleet run"


def _images(count: int, side: int = 8) -> np.ndarray:
    return np.arange(count * side * side, dtype=np.uint8).reshape(count, side, side)


def _labels(count: int, value: int | None = None) -> np.ndarray:
    return np.full(count, value, dtype=np.uint8) if value is not None else np.arange(count, dtype=np.uint8) % 10


def _repo_cases(command: str, prefix: list[str]) -> dict[str, Bad]:
    """``--repo`` at what is not a fleet repository: missing, a file, a folder holding none of its folders."""
    return {
        f"{command}-repo-missing": Bad(
            command,
            lambda c: Call([*prefix, "--repo", c.path("nowhere")], err=["--repo", c.path("nowhere"), "no such folder"]),
        ),
        f"{command}-repo-is-a-file": Bad(
            command,
            lambda c: Call(
                [*prefix, "--repo", c.file("a-file", "jobs: []\n")], err=["--repo", c.path("a-file"), "is a file"]
            ),
        ),
        f"{command}-repo-not-a-fleet-repository": Bad(
            command,
            lambda c: Call(
                [*prefix, "--repo", c.folder("other/src")],
                err=["--repo", c.path("other/src"), "expected a fleet repository", "jobs/, clusters/ or policies/"],
            ),
        ),
    }


RENDER: dict[str, Bad] = {
    "render-out-the-repository": Bad(
        "render",
        lambda c: Call(["render", "--out", str(c.repo)], err=["--out", "not the repository", "nothing was written"]),
    ),
    "render-out-the-current-folder": Bad(
        "render", lambda c: Call(["render", "--out", "."], err=["--out .", "not the repository", "nothing was written"])
    ),
    "render-out-a-folder-holding-the-repository": Bad(
        "render", lambda c: Call(["render", "--out", str(c.tmp)], err=["--out", "not the repository"])
    ),
    "render-out-dot-git": Bad(
        "render",
        lambda c: Call(
            ["render", "--out", c.file("repo/.git/HEAD", "ref: refs/heads/main\n").removesuffix("/HEAD")],
            err=["--out", "its .git", "nothing was written"],
        ),
    ),
    "render-out-the-jobs-folder": Bad(
        "render", lambda c: Call(["render", "--out", str(c.repo / "jobs")], err=["--out", "jobs, clusters, policies"])
    ),
    "render-out-inside-the-clusters-folder": Bad(
        "render",
        lambda c: Call(
            ["render", "--out", str(c.repo / "clusters" / "out")], err=["--out", "jobs, clusters, policies"]
        ),
    ),
    "render-out-a-link-to-the-repository": Bad(
        "render", lambda c: Call(["render", "--out", c.link("link", c.repo)], err=["--out", "not the repository"])
    ),
    "render-out-a-link-to-the-policies-folder": Bad(
        "render",
        lambda c: Call(
            ["render", "--out", c.link("policies-link", c.repo / "policies")], err=["--out", "jobs, clusters, policies"]
        ),
    ),
    "render-out-a-foreign-folder": Bad(
        "render",
        lambda c: Call(
            ["render", "--out", c.file("elsewhere/notes.txt", "mine\n").removesuffix("/notes.txt")],
            err=["--out", "notes.txt", "nothing was written"],
        ),
    ),
    "render-out-a-file": Bad(
        "render", lambda c: Call(["render", "--out", c.file("out.yaml", "a: 1\n")], err=["--out", "is a file"])
    ),
    "render-out-under-a-file": Bad(
        "render",
        lambda c: Call(["render", "--out", c.file("plain", "x\n") + "/manifests"], err=["--out", c.path("plain")]),
    ),
    "render-crds-a-file": Bad(
        "render", lambda c: Call(["render", "--crds", c.file("crds.yaml", "a: 1\n")], err=["--crds", "is a file"])
    ),
    "render-base-without-diff": Bad(
        "render", lambda c: Call(["render", "--base", "main"], err=["--base goes with --diff"])
    ),
    "render-output-without-diff": Bad(
        "render", lambda c: Call(["render", "--output", "markdown"], err=["--output goes with --diff"])
    ),
    "render-diff-with-check": Bad(
        "render", lambda c: Call(["render", "--diff", "--check"], err=["--diff and --check exclude each other"])
    ),
    "render-diff-output-unknown": Bad(
        "render",
        lambda c: Call(
            ["render", "--diff", "--output", "html"], err=["--output", "'html' is not one of 'text', 'markdown'"]
        ),
    ),
    "render-diff-outside-git": Bad(
        "render",
        lambda c: Call(["render", "--diff"], err=["--diff", "not in a git repository with a commit to compare with"]),
    ),
    "render-diff-base-unknown-ref": Bad(
        "render",
        lambda c: Call(["render", "--diff", "--base", "no-such-ref"], err=["--base 'no-such-ref'"]),
        prepare=Context.commit,
    ),
    "render-unknown-option": Bad("render", lambda c: Call(["render", "--outt", "x"], err=["No such option '--outt'"])),
    **_repo_cases("render", ["render"]),
}


def _base_that_does_not_load(c: Context) -> None:
    """A commit whose job does not load, the working tree fixed since."""
    c.edit_repo(JOB, "rounds: 5", "rounds: five")
    c.commit()
    c.edit_repo(JOB, "rounds: five", "rounds: 5")


PLAN: dict[str, Bad] = {
    "plan-unknown-job": Bad("plan", lambda c: Call(["plan", "nope"], err=["no job named 'nope'", BARE_JOB_NAME])),
    "plan-a-known-and-an-unknown-job": Bad(
        "plan", lambda c: Call(["plan", "mnist-digits", "nope"], err=["no job named 'nope'"])
    ),
    "plan-a-missing-job-file": Bad(  # a job's own file names it; a path to none is refused
        "plan", lambda c: Call(["plan", "jobs/x.yaml"], err=["jobs/x.yaml", "expected a job name", BARE_JOB_NAME])
    ),
    "plan-output-unknown": Bad(
        "plan", lambda c: Call(["plan", "--output", "xml"], err=["--output", "'xml' is not one of"])
    ),
    "plan-base-without-diff": Bad("plan", lambda c: Call(["plan", "--base", "main"], err=["--base goes with --diff"])),
    "plan-diff-outside-git": Bad(
        "plan",
        lambda c: Call(["plan", "--diff"], err=["--diff", "not in a git repository with a commit to compare with"]),
    ),
    "plan-diff-base-unknown-ref": Bad(
        "plan",
        lambda c: Call(["plan", "--diff", "--base", "no-such-ref"], err=["--base 'no-such-ref'", "not a commit"]),
        prepare=Context.commit,
    ),
    "plan-diff-base-not-a-commit": Bad(
        "plan",
        lambda c: Call(["plan", "--diff", "--base", "HEAD~3"], err=["--base 'HEAD~3'", "not a commit"]),
        prepare=Context.commit,
    ),
    "plan-diff-base-does-not-load": Bad(
        "plan",
        lambda c: Call(["plan", "--diff"], err=["base", "does not load", f"{JOB}:", "rounds: expected a whole number"]),
        prepare=_base_that_does_not_load,
    ),
    "plan-diff-unknown-job": Bad(
        "plan", lambda c: Call(["plan", "--diff", "nope"], err=["no job named 'nope'"]), prepare=Context.commit
    ),
    "plan-unknown-option": Bad("plan", lambda c: Call(["plan", "--job", "x"], err=["No such option '--job'"])),
    **_repo_cases("plan", ["plan"]),
}


def _one_collaborators_data(c: Context) -> str:
    """A data root holding the partition of one of the job's three clusters only (it needs two)."""
    source = c.data / "data" / "digits" / "eu-central-lab" / "digits.npz"
    target = c.tmp / "partial" / "data" / "digits" / "eu-central-lab" / "digits.npz"
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    return str(c.tmp / "partial")


RUN: dict[str, Bad] = {
    "run-unknown-job": Bad("run", lambda c: Call(["run", "nope"], err=["no job named 'nope'", BARE_JOB_NAME])),
    "run-a-missing-job-file": Bad(  # a job's own file names it; a path to none is refused
        "run", lambda c: Call(["run", "jobs/x.yaml"], err=["jobs/x.yaml", "expected a job name", BARE_JOB_NAME])
    ),
    "run-a-cluster-file-for-a-job": Bad(
        "run",
        lambda c: Call(
            ["run", "clusters/eu-west-hospital.yaml"],
            err=["clusters/eu-west-hospital.yaml", "expected a job name", BARE_JOB_NAME],
        ),
    ),
    "run-no-job": Bad("run", lambda c: Call(["run"], err=["Missing argument 'JOB'"])),
    "run-two-jobs": Bad("run", lambda c: Call(["run", "mnist-digits", "other"], err=["unexpected extra argument"])),
    "run-data-root-missing": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--data-root", c.path("no-data")],
            err=["--data-root", c.path("no-data"), "does not exist", "fleet data prepare"],
        ),
    ),
    "run-data-root-empty": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--data-root", c.folder("empty-data")],
            err=["--data-root", c.path("empty-data"), "fleet data prepare"],
        ),
    ),
    "run-data-root-holds-one-collaborators-data": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--data-root", _one_collaborators_data(c)],
            err=["--data-root", "minAvailableClients", "eu-west-hospital"],
        ),
    ),
    "run-data-root-a-file": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--data-root", c.file("data.npz", b"x")], err=["--data-root", "is a file"]
        ),
    ),
    "run-test-data-missing": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--test-data", c.path("none.npz")],
            err=["--test-data", c.path("none.npz"), "does not exist"],
        ),
    ),
    "run-test-data-not-a-zip": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--test-data", c.file("test.npz", b"not a zip archive")],
            err=["--test-data", c.path("test.npz"), "expected a partition file"],
        ),
    ),
    "run-test-data-wrong-arrays": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--test-data", c.npz("test.npz", x=np.zeros(3))],
            err=["--test-data", c.path("test.npz"), "'images'"],
        ),
    ),
    "run-test-data-images-of-another-size": Bad(
        "run",
        lambda c: Call(
            # 5x5: no dataset's size, whatever the example trains on.
            ["run", "mnist-digits", "--test-data", c.npz("test.npz", images=_images(20, 5), labels=_labels(20))],
            err=["--test-data", c.path("test.npz"), "expected images of"],
        ),
    ),
    "run-test-data-a-folder": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--test-data", c.folder("split")], err=["--test-data", "is a directory"]
        ),
    ),
    "run-default-test-data-corrupt": Bad(
        "run",
        lambda c: Call(["run", "mnist-digits"], err=[c.test_split, "expected a partition file"]),
        prepare=lambda c: c.file("repo/.fleet/data/test/digits.npz", b"\x00corrupt"),
    ),
    "run-executor-unknown": Bad(
        "run",
        lambda c: Call(["run", "mnist-digits", "--executor", "bogus"], err=["--executor", "'bogus' is not one of"]),
    ),
    "run-work-dir-a-file": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--work-dir", c.file("runs.txt", "x\n")], err=["--work-dir", "is a file"]
        ),
    ),
    "run-work-dir-under-a-file": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--work-dir", c.file("plain", "x\n") + "/runs"], err=["--work-dir", c.path("plain")]
        ),
    ),
    "run-work-dir-in-the-jobs-folder": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--work-dir", str(c.repo / "jobs" / "runs")], err=["--work-dir", "jobs"]
        ),
    ),
    "run-app-missing": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--app", c.path("no-app")], err=["--app", c.path("no-app"), "does not exist"]
        ),
    ),
    "run-app-without-manifest": Bad(
        "run",
        lambda c: Call(
            ["run", "mnist-digits", "--app", c.folder("app")], err=["--app", "pyproject.toml", "cannot read the app's"]
        ),
    ),
    "run-while-the-job-runs": Bad(
        "run",
        lambda c: Call(["run", "mnist-digits"], err=["already running", "4242"]),
        prepare=lambda c: c.hold_run_lock("mnist-digits"),
    ),
    **_repo_cases("run", ["run", "mnist-digits"]),
}


def _evaluate(c: Context, model: str, test: str | None = None, *extra: str) -> list[str]:
    return ["evaluate", model, "--test-data", test or c.test_split, *extra]


EVALUATE: dict[str, Bad] = {
    "evaluate-model-missing": Bad(
        "evaluate",
        lambda c: Call(_evaluate(c, c.path("none.pt")), err=[c.path("none.pt"), MODEL, "does not exist"]),
    ),
    "evaluate-model-random-bytes": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.file("model.pt", bytes(range(256)) * 4)), err=[c.path("model.pt"), MODEL, "unreadable"]
        ),
    ),
    "evaluate-model-a-text-file": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.file("model.txt", "weights: 1\n")), err=[c.path("model.txt"), MODEL, "unreadable"]
        ),
    ),
    "evaluate-model-empty": Bad(
        "evaluate", lambda c: Call(_evaluate(c, c.file("model.pt", b"")), err=[c.path("model.pt"), MODEL, "unreadable"])
    ),
    "evaluate-model-a-folder": Bad(
        "evaluate",
        lambda c: Call(_evaluate(c, c.folder("model")), err=[c.path("model"), MODEL], absent=["does not exist"]),
    ),
    "evaluate-model-another-torch-file": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("not-fleets.pt")), err=["not-fleets.pt", "expected architecture 'small-cnn'"]
        ),
    ),
    "evaluate-model-a-bare-tensor": Bad(
        "evaluate",
        lambda c: Call(_evaluate(c, c.asset("tensor.pt")), err=["tensor.pt", "expected architecture", "'Tensor'"]),
    ),
    "evaluate-model-weights-of-the-wrong-shape": Bad(
        "evaluate",
        lambda c: Call(_evaluate(c, c.asset("cut.pt")), err=["cut.pt", "expected a state dict matching 'small-cnn'"]),
    ),
    "evaluate-model-unsupported-input-shape": Bad(
        "evaluate", lambda c: Call(_evaluate(c, c.asset("model-9x9.pt")), err=["model-9x9.pt", "(1, 9, 9)"])
    ),
    "evaluate-model-for-28x28-on-8x8-data": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model-28.pt"), c.npz("test-8.npz", images=_images(20, 8), labels=_labels(20))),
            err=[c.path("test-8.npz"), "expected 28x28 images", "got 8x8"],
        ),
    ),
    "evaluate-test-data-28x28-for-an-8x8-model": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.npz("test.npz", images=_images(20, 28), labels=_labels(20))),
            err=[c.path("test.npz"), "expected 8x8 images", "got 28x28"],
        ),
    ),
    "evaluate-test-data-missing": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.path("none.npz")),
            err=["test data", c.path("none.npz"), "does not exist"],
        ),
    ),
    "evaluate-test-data-not-a-zip": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.file("test.npz", b"PK not really")),
            err=["test data", c.path("test.npz"), "expected a partition file"],
        ),
    ),
    "evaluate-test-data-truncated": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.truncated(Path(c.test_split), "half.npz")),
            err=["test data", c.path("half.npz"), "expected a partition file"],
        ),
    ),
    "evaluate-test-data-wrong-arrays": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.npz("test.npz", x=np.zeros(3))),
            err=[c.path("test.npz"), "expected arrays 'images' and 'labels'"],
        ),
    ),
    "evaluate-test-data-float-images": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.npz("test.npz", images=np.zeros((4, 8, 8)), labels=_labels(4))),
            err=[c.path("test.npz"), "expected 'images' of dtype uint8"],
        ),
    ),
    "evaluate-test-data-odd-image-shape": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(
                c, c.asset("model.pt"), c.npz("test.npz", images=np.zeros((4, 5, 7), np.uint8), labels=_labels(4))
            ),
            err=[c.path("test.npz"), "expected images of shape (N, 8, 8) or (N, 28, 28)"],
        ),
    ),
    "evaluate-test-data-fewer-labels-than-images": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.npz("test.npz", images=_images(4), labels=_labels(3))),
            err=[c.path("test.npz"), "expected one label per image"],
        ),
    ),
    "evaluate-test-data-no-samples": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.npz("test.npz", images=_images(0), labels=_labels(0))),
            err=[c.path("test.npz"), "expected at least one sample"],
        ),
    ),
    "evaluate-test-data-label-out-of-range": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.npz("test.npz", images=_images(4), labels=_labels(4, 11))),
            err=[c.path("test.npz"), "expected labels 0-9", "got 11"],
        ),
    ),
    "evaluate-test-data-pickled-objects": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(
                c,
                c.asset("model.pt"),
                c.npz("test.npz", images=np.array([{"a": 1}], dtype=object), labels=np.array([{}], dtype=object)),
            ),
            err=[c.path("test.npz"), "unreadable"],
        ),
    ),
    "evaluate-test-data-an-empty-folder": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.folder("split")),
            err=[c.path("split"), "holds no partition file (*.npz) and no MNIST IDX pair"],
        ),
    ),
    "evaluate-test-data-a-text-file": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), c.file("test.csv", "1,2,3\n")),
            err=[c.path("test.csv"), "expected a partition file"],
        ),
    ),
    "evaluate-default-test-data-missing": Bad(
        "evaluate",
        lambda c: Call(
            ["evaluate", c.asset("model.pt")],
            err=["test data", ".fleet/data/test/digits.npz", "does not exist", "fleet data prepare"],
            cwd=Path(c.folder("elsewhere")),
        ),
    ),
    "evaluate-report-a-file": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), None, "--report", c.file("report.md", "# mine\n")),
            err=["--report", "is a file"],
        ),
    ),
    "evaluate-report-under-a-file": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), None, "--report", c.file("plain", "x\n") + "/report"),
            err=["--report", c.path("plain")],
        ),
    ),
    "evaluate-output-unknown": Bad(
        "evaluate",
        lambda c: Call(
            _evaluate(c, c.asset("model.pt"), None, "--output", "csv"), err=["--output", "'csv' is not one of"]
        ),
    ),
    "evaluate-no-model": Bad("evaluate", lambda c: Call(["evaluate"], err=["Missing argument 'MODEL'"])),
}


def _status_file(c: Context, job: str, content: str | bytes) -> str:
    return c.file(f"runs/{job}/status.json", content)


def _corrupt_status(content: str | bytes, *phrases: str) -> Bad:
    return Bad(
        "status",
        lambda c: Call(
            ["status", "--work-dir", c.path("runs")],
            err=[_status_file(c, "digits", content), "expected a FederatedLearningStatus", *phrases],
        ),
    )


STATUS: dict[str, Bad] = {
    "status-file-not-json": _corrupt_status("{not json"),
    "status-file-truncated": _corrupt_status(GOOD_STATUS[: len(GOOD_STATUS) // 2]),
    "status-file-empty": _corrupt_status(""),
    "status-file-a-list": _corrupt_status("[]"),
    "status-file-unknown-phase": _corrupt_status(json.dumps({"phase": "Exploded"}), "phase", "'Exploded'"),
    "status-file-unknown-field": _corrupt_status(json.dumps({"phase": "Running", "colour": "red"}), "colour"),
    "status-file-round-not-a-number": _corrupt_status(json.dumps({"currentRound": "two"}), "currentRound"),
    "status-file-not-utf8": _corrupt_status(b"\xff\xfe{}"),
    "status-file-a-folder": Bad(
        "status",
        lambda c: Call(
            ["status", "--work-dir", c.path("runs")],
            err=[c.folder("runs/digits/status.json"), "expected a FederatedLearningStatus"],
        ),
    ),
    "status-file-corrupt-for-the-job-asked": Bad(
        "status",
        lambda c: Call(
            ["status", "digits", "--work-dir", c.path("runs")],
            err=[_status_file(c, "digits", "{"), "expected a FederatedLearningStatus"],
        ),
    ),
    "status-one-corrupt-file-hides-no-other-job": Bad(
        "status",
        lambda c: Call(
            ["status", "--work-dir", c.path("runs")],
            err=[_status_file(c, "beta", "{"), "expected a FederatedLearningStatus"],
            out=["alpha", "gamma", "Completed"],
        ),
        prepare=lambda c: [_status_file(c, job, GOOD_STATUS) for job in ("alpha", "gamma")],
    ),
    "status-unknown-job": Bad(
        "status",
        lambda c: Call(["status", "nope", "--work-dir", str(c.runs)], err=["no status for job 'nope'", str(c.runs)]),
        code=NOT_FOUND,
    ),
    "status-job-in-an-empty-work-dir": Bad(
        "status",
        lambda c: Call(
            ["status", "mnist-digits", "--work-dir", c.folder("empty-runs")],
            err=["no status for job 'mnist-digits'", c.path("empty-runs")],
        ),
        code=NOT_FOUND,
    ),
    "status-work-dir-a-file": Bad(
        "status",
        lambda c: Call(["status", "--work-dir", c.file("runs.json", GOOD_STATUS)], err=["--work-dir", "is a file"]),
    ),
    "status-output-unknown": Bad(
        "status", lambda c: Call(["status", "--output", "yaml"], err=["--output", "'yaml' is not one of"])
    ),
    "status-kubeconfig-missing": Bad(
        "status",
        lambda c: Call(["status", "--kubeconfig", c.path("kubeconfig")], err=["--kubeconfig", "does not exist"]),
    ),
    "status-kubeconfig-not-one": Bad(
        "status",
        lambda c: Call(
            ["status", "--kubeconfig", c.file("kubeconfig", "just text\n")], err=[c.path("kubeconfig"), "kubeconfig"]
        ),
    ),
    "status-kubeconfig-without-a-context": Bad(
        "status",
        lambda c: Call(
            ["status", "--kubeconfig", c.file("kubeconfig", "apiVersion: v1\nkind: Config\nclusters: []\n")],
            err=[c.path("kubeconfig"), "current-context"],
        ),
    ),
}


def _validate(c: Context, *args: str) -> list[str]:
    """`fleet validate` with a CRD folder of its own (empty: the core kinds need none)."""
    return ["validate", *args, "--crds", c.folder("crds")]


def _manifest_error(name: str, content: str | bytes, line: int | None, *phrases: str) -> Bad:
    def build(c: Context) -> Call:
        path = c.file(f"m/{name}", content)
        return Call(_validate(c, path), err=[f"{path}:{line}:" if line else f"{path}:", *phrases])

    return Bad("validate", build)


def _invalid_resource(name: str, content: str, *phrases: str) -> Bad:
    def build(c: Context) -> Call:
        path = c.file(f"m/{name}", content)
        return Call(_validate(c, path), out=[f"{path}:", *phrases, "Summary: 1 resource found in 1 file"])

    return Bad("validate", build, code=INVALID_RESOURCE)


VALIDATE: dict[str, Bad] = {
    "validate-path-missing": Bad(
        "validate",
        lambda c: Call(_validate(c, c.path("none.yaml")), err=[c.path("none.yaml"), "no such file or folder"]),
    ),
    "validate-unparsable-yaml": _manifest_error("a.yaml", "kind: [\n", 2, "expected valid YAML"),
    "validate-not-utf8": _manifest_error("b.yaml", b"kind: \xff\xfe\n", None, "expected a readable UTF-8 YAML file"),
    "validate-a-text-file": _manifest_error("notes.txt", "hello\n", None, "expected a Kubernetes object"),
    "validate-a-scalar-document": _manifest_error("c.yaml", "a string\n", None, "document 1", "found string"),
    "validate-a-list-document": _manifest_error("d.yaml", "- a\n- b\n", None, "document 1", "found array"),
    "validate-second-document-a-number": _manifest_error(
        "e.yaml", NAMESPACE + "---\n42\n", None, "document 2", "expected a Kubernetes object"
    ),
    "validate-duplicate-key": _manifest_error("f.yaml", NAMESPACE + "kind: Namespace\n", 5, "duplicate key 'kind'"),
    "validate-python-tag": _manifest_error(
        "g.yaml", "kind: !!python/object/apply:os.system [ls]\n", 1, "expected valid YAML"
    ),
    "validate-nested-1001-levels": _manifest_error(
        "h.yaml", "kind: ConfigMap\ndata: " + "[" * 1001 + "]" * 1001 + "\n", 2, "expected YAML nested at most 100"
    ),
    "validate-nested-101-levels": _manifest_error(
        "i.yaml", "kind: ConfigMap\ndata: " + "[" * 101 + "]" * 101 + "\n", 2, "expected YAML nested at most 100"
    ),
    "validate-not-a-kubernetes-object": _invalid_resource(
        "j.yaml", "metadata:\n  name: x\n", "expected string fields apiVersion and kind", "Errors: 1"
    ),
    "validate-unknown-field": _invalid_resource(
        "k.yaml", NAMESPACE + "bogus: 1\n", "Namespace fl-demo: bogus: unknown field", "Invalid: 1"
    ),
    "validate-unknown-metadata-field": _invalid_resource(
        "l.yaml", NAMESPACE + "  nmae: y\n", "metadata.nmae: unknown field", "Invalid: 1"
    ),
    "validate-name-not-dns": _invalid_resource(
        "n.yaml", NAMESPACE.replace("fl-demo", "FL_Demo"), "metadata.name: expected a DNS label", "Invalid: 1"
    ),
    "validate-crds-missing": Bad(
        "validate",
        lambda c: Call(
            ["validate", c.file("p.yaml", PLACEMENT), "--crds", c.path("nowhere")],
            err=[c.path("nowhere"), "does not exist", "--crds"],
        ),
    ),
    "validate-crds-a-file": Bad(
        "validate",
        lambda c: Call(
            ["validate", c.file("p.yaml", PLACEMENT), "--crds", c.file("crds.yaml", "a: 1\n")],
            err=["--crds", "is a file"],
        ),
    ),
    "validate-crds-unparsable": Bad(
        "validate",
        lambda c: Call(
            [
                "validate",
                c.file("p.yaml", PLACEMENT),
                "--crds",
                c.file("bad-crds/placements.yaml", "# cluster.open-cluster-management.io\nkind: [\n").removesuffix(
                    "/placements.yaml"
                ),
            ],
            err=[c.path("bad-crds/placements.yaml"), "expected a valid YAML CustomResourceDefinition"],
        ),
    ),
    "validate-output-unknown": Bad(
        "validate",
        lambda c: Call(
            _validate(c, c.file("ns.yaml", NAMESPACE), "--output", "yaml"), err=["--output", "'yaml' is not one of"]
        ),
    ),
}

DATA: dict[str, Bad] = {
    "data-prepare-unknown-job": Bad(
        "data-prepare",
        lambda c: Call(
            ["data", "prepare", "--job", "nope"],
            err=["--job", "expected a job name (mnist-digits, mnist-digits-openfl), got 'nope'"],
        ),
    ),
    "data-prepare-empty-job-name": Bad(
        "data-prepare", lambda c: Call(["data", "prepare", "--job", ""], err=["--job", "expected a job name", "got ''"])
    ),
    "data-prepare-job-a-missing-file": Bad(
        "data-prepare",
        lambda c: Call(["data", "prepare", "--job", "jobs/x.yaml"], err=["jobs/x.yaml", "expected a job name"]),
    ),
    "data-prepare-data-root-a-file": Bad(
        "data-prepare",
        lambda c: Call(["data", "prepare", "--data-root", c.file("data.npz", b"x")], err=["--data-root", "is a file"]),
    ),
    "data-prepare-data-root-under-a-file": Bad(
        "data-prepare",
        lambda c: Call(
            ["data", "prepare", "--data-root", c.file("plain", "x\n") + "/data"], err=["--data-root", c.path("plain")]
        ),
    ),
    "data-prepare-data-root-in-the-jobs-folder": Bad(
        "data-prepare",
        lambda c: Call(["data", "prepare", "--data-root", str(c.repo / "jobs" / "data")], err=["--data-root", "jobs"]),
    ),
    "data-prepare-unknown-option": Bad(
        "data-prepare", lambda c: Call(["data", "prepare", "--out", "x"], err=["No such option '--out'"])
    ),
    "data-unknown-subcommand": Bad("data-prepare", lambda c: Call(["data", "fetch"], err=["No such command 'fetch'"])),
    **_repo_cases("data-prepare", ["data", "prepare"]),
}

SCHEMA: dict[str, Bad] = {
    "schema-out-a-file": Bad(
        "schema", lambda c: Call(["schema", "--out", c.file("schema.json", "{}\n")], err=["--out", "is a file"])
    ),
    "schema-out-under-a-file": Bad(
        "schema",
        lambda c: Call(["schema", "--out", c.file("plain", "x\n") + "/schemas"], err=["--out", c.path("plain")]),
    ),
    "schema-check-out-a-file": Bad(
        "schema",
        lambda c: Call(["schema", "--check", "--out", c.file("schema.json", "{}\n")], err=["--out", "is a file"]),
    ),
    "schema-unknown-option": Bad(
        "schema", lambda c: Call(["schema", "--kind", "Job"], err=["No such option '--kind'"])
    ),
}

CONTROLLER: dict[str, Bad] = {
    "controller-kubeconfig-not-one": Bad(
        "controller",
        lambda c: Call(
            ["controller", "--kubeconfig", c.file("kubeconfig", "just text\n")],
            err=[c.path("kubeconfig"), "expected a usable kubeconfig"],
        ),
    ),
    "controller-kubeconfig-unknown-context": Bad(
        "controller",
        lambda c: Call(
            [
                "controller",
                "--kubeconfig",
                c.file("kubeconfig", "apiVersion: v1\nkind: Config\nclusters: []\ncurrent-context: x\n"),
                "--context",
                "nope",
            ],
            err=[c.path("kubeconfig"), "expected a usable kubeconfig", "nope"],
        ),
    ),
    "controller-kubeconfig-missing": Bad(
        "controller",
        lambda c: Call(["controller", "--kubeconfig", c.path("kubeconfig")], err=["--kubeconfig", "does not exist"]),
    ),
    "controller-interval-too-short": Bad(
        "controller", lambda c: Call(["controller", "--interval", "0"], err=["--interval", "x>=0.1"])
    ),
    "controller-port-out-of-range": Bad(
        "controller", lambda c: Call(["controller", "--metrics-port", "70000"], err=["--metrics-port", "1<=x<=65535"])
    ),
    "controller-models-root-a-file": Bad(
        "controller",
        lambda c: Call(["controller", "--models-root", c.file("models", "x\n")], err=["--models-root", "is a file"]),
    ),
}

TOP: dict[str, Bad] = {
    "unknown-command": Bad("fleet", lambda c: Call(["deploy"], err=["No such command 'deploy'"])),
}

BAD: dict[str, Bad] = {
    **RENDER,
    **PLAN,
    **RUN,
    **EVALUATE,
    **STATUS,
    **VALIDATE,
    **DATA,
    **SCHEMA,
    **CONTROLLER,
    **TOP,
}
STARTS_PROCESSES = {"run", "controller"}
"""Commands that would start processes (or servers) if they did not refuse: guarded."""


@pytest.mark.parametrize("case", [pytest.param(name, id=name) for name in BAD])
def test_a_misused_command_exits_with_its_code_says_why_and_writes_nothing(
    workspace: Context, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    bad = BAD[case]
    if bad.prepare is not None:
        bad.prepare(workspace)
    call = bad.build(workspace)
    if call.cwd is not None:
        monkeypatch.chdir(call.cwd)
    before = snapshot(workspace.tmp)

    with ExitStack() as stack:
        if bad.command in STARTS_PROCESSES:
            stack.enter_context(no_process_starts(monkeypatch))
        stack.enter_context(deadline(60))
        started = time.monotonic()
        result = CliRunner().invoke(main, list(call.argv))
        seconds = time.monotonic() - started

    wrong = violations(bad.code, call, result, changes(before, snapshot(workspace.tmp)))
    if bad.command == "run" and seconds >= RUN_REFUSAL_SECONDS:
        wrong.append(f"fleet run took {seconds:.1f} s to refuse")
    assert not wrong, "\n".join(wrong) + "\n" + describe(result)


# --- the checks themselves ------------------------------------------------------------------------------------


def test_the_snapshot_sees_every_kind_of_write(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "same.txt").write_text("same\n")
    (tmp_path / "gone.txt").write_text("x\n")
    before = snapshot(tmp_path)
    assert changes(before, snapshot(tmp_path)) == []

    time.sleep(0.05)  # past the file system clock's granularity
    (tmp_path / "kept" / "same.txt").write_text("same\n")  # the same bytes, rewritten
    (tmp_path / "kept" / "temporary").write_text("x\n")  # made and removed again
    (tmp_path / "kept" / "temporary").unlink()
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "new" / "deep").mkdir(parents=True)
    (tmp_path / "new" / "deep" / "file").write_text("x\n")

    assert changes(before, snapshot(tmp_path)) == [
        "created new/ (and 2 entries in it)",
        "removed gone.txt",
        "changed . (folder)",
        "changed kept (folder)",
        "changed kept/same.txt (file)",
    ]


def test_the_guard_refuses_to_start_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    with no_process_starts(monkeypatch), pytest.raises(ProcessStartedError):
        subprocess.run(["true"], check=False)
    assert subprocess.run(["true"], check=False).returncode == 0


# --- the count --------------------------------------------------------------------------------------------------


def test_there_are_at_least_120_distinct_bad_inputs() -> None:
    assert len(set(CASES) & set(BAD)) == 0
    assert len(BAD) >= 45
    assert len(CASES) + len(BAD) >= 120
    commands = {bad.command for bad in BAD.values()}
    assert commands >= {"render", "plan", "run", "evaluate", "status", "validate", "data-prepare", "schema"}
    assert all(sum(bad.command == command for bad in BAD.values()) >= 4 for command in commands - {"fleet"})
