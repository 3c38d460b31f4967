"""fleet.diff: resource-by-resource comparison, Secret masking, the markdown cap, the git base."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.diff import (
    DiffError,
    Report,
    base_tree,
    compare,
    format_markdown,
    format_text,
    render_diff,
    rendered_files,
    resolve_base,
    resources,
)
from fleet.repository import load_repository
from render.output import to_yaml


def _object(kind: str, name: str, namespace: str = "ns", source: str = "jobs/a.yaml", **body: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.org/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "annotations": {"fleet.dev/source": source}},
        **body,
    }


def _files(*items: tuple[str, dict[str, Any]]) -> dict[str, str]:
    return {path: to_yaml(body) for path, body in items}


def test_resources_are_compared_by_identity_not_path() -> None:
    placement = _object("Placement", "p", spec={"numberOfClusters": 2})
    moved = _files(("hub/elsewhere/p.yaml", placement))
    assert compare(resources(_files(("hub/jobs/p.yaml", placement))), resources(moved)) == []
    # The same object in another target is another resource.
    both = _files(("hub/jobs/p.yaml", placement), ("upstream/jobs/p.yaml", placement))
    [change] = compare(resources(moved), resources(both))
    assert change.status == "added" and change.target == "upstream"


def test_added_modified_deleted_with_line_counts() -> None:
    base = _files(
        ("hub/a.yaml", _object("Placement", "a", spec={"numberOfClusters": 2})),
        ("hub/gone.yaml", _object("Placement", "gone", spec={})),
    )
    head = _files(
        ("hub/a.yaml", _object("Placement", "a", spec={"numberOfClusters": 3})),
        ("hub/new.yaml", _object("Placement", "new", spec={})),
    )
    changes = {c.identity[-1]: c for c in compare(resources(base), resources(head))}
    assert {name: c.status for name, c in changes.items()} == {
        "a": "modified",
        "gone": "deleted",
        "new": "added",
    }
    assert (changes["a"].added_lines, changes["a"].removed_lines) == (1, 1)
    assert "-  numberOfClusters: 2\n+  numberOfClusters: 3\n" in changes["a"].diff
    assert changes["new"].removed_lines == 0 and changes["new"].added_lines == len(head["hub/new.yaml"].splitlines())


def test_secret_values_are_masked_even_inside_a_manifest_work() -> None:
    def work(password: str, user: str) -> dict[str, Any]:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "data": {"user": user, "pw": password},
        }
        return _object("ManifestWork", "w", spec={"workload": {"manifests": [secret]}})

    base = _files(("hub/w.yaml", work("c2VjcmV0LW9uZQ==", "YWRtaW4=")))
    head = _files(("hub/w.yaml", work("c2VjcmV0LXR3bw==", "YWRtaW4=")))
    [change] = compare(resources(base), resources(head))
    assert "c2VjcmV0" not in change.diff and "YWRtaW4" not in change.diff
    assert "-        pw: '*** (before)'" in change.diff and "+        pw: '*** (after)'" in change.diff
    assert "user: '***'" in change.diff
    # A Secret whose values did not change is no change at all.
    assert compare(resources(base), resources(base)) == []


def _report(count: int, lines: int = 5) -> Report:
    base: dict[str, str] = {}
    head: dict[str, str] = {}
    for i in range(count):
        source = f"jobs/job-{i % 4}.yaml"
        base[f"hub/{i}.yaml"] = to_yaml(_object("Placement", f"p{i}", source=source, spec={"v": list(range(lines))}))
        head[f"hub/{i}.yaml"] = to_yaml(
            _object("Placement", f"p{i}", source=source, spec={"v": list(range(1, lines + 1))})
        )
    return Report("main (abc)", compare(resources(base), resources(head)), [])


def test_markdown_one_section_per_job() -> None:
    markdown = format_markdown(_report(8))
    assert markdown.count("<details>") == 4 == markdown.count("</details>")
    assert "<code>jobs/job-0.yaml</code>: 2 modified" in markdown
    assert "| hub | 0 | 8 | 0 | +8 −8 |" in markdown
    assert "Truncated" not in markdown


@pytest.mark.parametrize("limit", [3_000, 8_000, 20_000])
def test_markdown_cap_is_kept_and_visible(limit: int) -> None:
    report = _report(200, lines=20)
    full = format_markdown(report, limit=10**9)
    assert len(full) > limit
    capped = format_markdown(report, limit=limit)
    assert len(capped) <= limit
    assert "Truncated: the diffs of" in capped and f"{limit:,} characters" in capped
    assert capped.count("<details>") == capped.count("</details>")


def test_markdown_fence_outgrows_backticks_in_the_content() -> None:
    base = _files(("hub/a.yaml", _object("ConfigMap", "a", data={"x": "```"})))
    head = _files(("hub/a.yaml", _object("ConfigMap", "a", data={"x": "````"})))
    markdown = format_markdown(Report("b", compare(resources(base), resources(head)), []))
    assert "`````diff\n" in markdown


def test_no_change_text_and_markdown() -> None:
    report = Report("HEAD (abc)", [], [])
    assert report.exit_code == 0
    assert "no changes" in format_text(report)
    assert "No changes" in format_markdown(report)


def test_renderer_changes_are_said_not_hidden() -> None:
    report = Report("main (abc)", [], ["render/charts/hub.py"])
    assert "render/charts/hub.py" in format_text(report)
    assert "render/charts/hub.py" in format_markdown(report)


# --- against a git base -------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip()


@pytest.fixture
def git_example(example_repo: Path) -> Path:
    _git(example_repo, "init", "--quiet", "--initial-branch=main")
    _git(example_repo, "add", ".")
    _git(example_repo, "commit", "--quiet", "-m", "base")
    return example_repo


def _diff(repo: Path, base: str | None = None) -> Report:
    return render_diff(repo, lambda: rendered_files(load_repository(repo)), base)


def _edit(path: Path, **changes: Any) -> None:
    document = yaml.safe_load(path.read_text())
    document.update(changes)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_unchanged_tree(git_example: Path) -> None:
    report = _diff(git_example)
    assert report.changes == [] and report.exit_code == 0
    assert report.base.startswith("merge base with main")


def test_changed_job_shows_exactly_its_objects(git_example: Path) -> None:
    _edit(git_example / "jobs" / "mnist-digits.yaml", minAvailableClients=3)
    report = _diff(git_example)
    assert report.exit_code == 1
    assert {(c.status, c.target, c.identity[2]) for c in report.changes} == {
        ("modified", "hub", "FederatedLearning"),
        ("modified", "upstream", "FederatedLearning"),
    }
    assert all(c.group == "jobs/mnist-digits.yaml" for c in report.changes)


def test_added_and_removed_job(git_example: Path) -> None:
    job = git_example / "jobs" / "mnist-digits.yaml"
    copy = git_example / "jobs" / "digits-copy.yaml"
    copy.write_text(job.read_text())
    _edit(copy, name="digits-copy", namespace="fl-digits-copy")
    job.unlink()
    report = _diff(git_example)
    statuses = {(c.status, c.identity[2], c.identity[4]) for c in report.changes if c.target == "hub"}
    assert ("added", "FederatedLearning", "digits-copy") in statuses
    assert ("deleted", "FederatedLearning", "mnist-digits") in statuses
    assert ("added", "Namespace", "fl-digits-copy") in statuses
    assert ("deleted", "Namespace", "fl-mnist-digits") in statuses


def test_added_removed_and_changed_clusters(git_example: Path) -> None:
    (git_example / "clusters" / "us-west-edge.yaml").unlink()
    _edit(git_example / "clusters" / "eu-west-hospital.yaml", capacity={"cpu": "10", "memory": "32Gi"})
    lab = yaml.safe_load((git_example / "clusters" / "eu-central-lab.yaml").read_text())
    lab["name"] = "eu-central-annex"
    (git_example / "clusters" / "eu-central-annex.yaml").write_text(yaml.safe_dump(lab))
    report = _diff(git_example)
    works = {(c.status, c.identity[3]) for c in report.changes if c.identity[2] == "ManifestWork"}
    assert works == {
        ("deleted", "us-west-edge"),
        ("modified", "eu-west-hospital"),
        ("added", "eu-central-annex"),
    }
    [hospital] = [c for c in report.changes if c.identity[3] == "eu-west-hospital"]
    changed = [line.split() for line in hospital.diff.splitlines() if line[:1] in "+-" and "value" in line]
    assert changed == [["-", "value:", "'8000'"], ["+", "value:", "'10000'"]]


def test_base_ref_and_checkout_untouched(git_example: Path) -> None:
    first = _git(git_example, "rev-parse", "HEAD")
    _edit(git_example / "jobs" / "mnist-digits.yaml", rounds=9)
    _git(git_example, "commit", "--quiet", "-am", "nine rounds")
    before = _git(git_example, "status", "--porcelain")
    report = _diff(git_example, base=first)
    assert {c.identity[2] for c in report.changes} == {"FederatedLearning"}
    assert _diff(git_example, base="HEAD").changes == []
    assert _git(git_example, "status", "--porcelain") == before
    with base_tree(git_example, first) as root:
        assert load_repository(root).jobs["mnist-digits"].rounds == 5


def test_no_base_folder_means_everything_added(tmp_path: Path, example_repo: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    _git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / "README").write_text("nothing yet\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "empty")
    for folder in ("jobs", "clusters", "policies"):
        shutil.copytree(example_repo / folder, repo / folder)
    report = _diff(repo)
    assert report.changes and {c.status for c in report.changes} <= {"added", "modified"}
    # Objects made from no file (the controller's install) render in an empty repository too; of those, only
    # what the repository's contents decide (the controller's Role in its namespace names each cluster's identity
    # record) may differ. Everything made from a definition is new.
    modified = [c for c in report.changes if c.status == "modified"]
    assert all(c.identity[2] == "Role" and "fleet-system" in c.identity for c in modified), modified
    assert any(c.status == "added" and c.identity[2] == "FederatedLearning" for c in report.changes)


def test_errors(tmp_path: Path, git_example: Path) -> None:
    with pytest.raises(DiffError, match="not a commit"):
        resolve_base(git_example, "no-such-ref")
    with pytest.raises(DiffError, match="git repository"):
        resolve_base(tmp_path, None)  # tmp_path holds the repository but is none
