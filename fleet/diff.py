"""What a change does to the hub: the rendered manifests of a base git ref against the working tree.

Both sides are rendered in memory and compared resource by resource, keyed by (target, apiVersion, kind,
namespace, name) so that a renamed file is not a change and a moved object is. The base's ``jobs/``,
``clusters/`` and ``policies/`` are read with ``git archive`` into a temporary folder: the user's checkout is
never touched. Both sides are rendered by the working tree's renderer; when the renderer's own code differs
from the base, the output says so (that effect shows in the change's committed ``manifests/``).

Nothing is treated as noise: the render is deterministic (no timestamps, no generated names), so every
difference is shown. Secret values (``data``, ``stringData`` of any v1 Secret, also inside a ManifestWork)
are masked as ``kubectl diff`` masks them: ``***`` when equal, ``*** (before)``/``*** (after)`` when not.

Exit codes follow ``kubectl diff``: 0 no change, 1 changes, 2 an error.
"""

from __future__ import annotations

import difflib
import html
import io
import os
import re
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.hub import INSTANCE_LABEL, SOURCE_ANNOTATION
from fleet.repository import FOLDERS, Repository

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # ~10x faster, same result

EXIT_SAME = 0
EXIT_CHANGED = 1
EXIT_ERROR = 2

MARKDOWN_LIMIT = 60_000
"""Characters of a markdown report: a GitHub comment holds 65,536, and the plan diff goes with it."""
RENDERER_PATHS = ("render", "fleet")
"""The renderer's code: when it differs from the base, the diff says that only definitions were compared."""
_MAIN_BRANCHES = ("origin/HEAD", "main", "origin/main", "master", "origin/master")


class DiffError(Exception):
    """The comparison cannot be made: not a git repository, an unknown ref, a base that does not load."""


# --- the base -----------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DiffError(f"git {' '.join(args)}: {error}") from error
    if done.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout.strip()


def resolve_base(repo: Path, ref: str | None) -> tuple[str, str]:
    """``(commit, description)`` of the base: ``ref``, else the merge base with the main branch, else HEAD."""
    if ref:
        try:
            return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"), ref
        except DiffError as error:
            raise DiffError(f"--base {ref!r} is not a commit of the git repository at {repo}") from error
    try:
        head = _git(repo, "rev-parse", "--verify", "HEAD^{commit}")
    except DiffError as error:
        raise DiffError(f"{repo} is not in a git repository with a commit to compare with: {error}") from error
    candidates = list(_MAIN_BRANCHES)
    pull_request_base = os.environ.get("GITHUB_BASE_REF")  # set by GitHub Actions on pull requests
    if pull_request_base:
        candidates[:0] = [f"origin/{pull_request_base}", pull_request_base]
    for branch in candidates:
        try:
            return _git(repo, "merge-base", "HEAD", branch), f"merge base with {branch}"
        except DiffError:
            continue
    return head, "HEAD"


@contextmanager
def base_tree(repo: Path, commit: str) -> Iterator[Path]:
    """A temporary folder holding ``jobs/``, ``clusters/`` and ``policies/`` of ``repo`` at ``commit``."""
    prefix = _git(repo, "rev-parse", "--show-prefix")
    tree = f"{commit}:{prefix}"
    present = set(_git(repo, "ls-tree", "--name-only", tree).splitlines()) if _has_tree(repo, tree) else set()
    folders = [name for name in FOLDERS if name in present]
    with tempfile.TemporaryDirectory(prefix="fleet-base-") as temporary:
        root = Path(temporary)
        if folders:
            archive = subprocess.run(
                ["git", "-C", str(repo), "archive", "--format=tar", tree, "--", *folders],
                capture_output=True,
                check=False,
                timeout=120,
            )
            if archive.returncode != 0:
                raise DiffError(f"git archive {tree}: {archive.stderr.decode(errors='replace').strip()}")
            with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                tar.extractall(root, filter="data")
        yield root


def _has_tree(repo: Path, tree: str) -> bool:
    try:
        return _git(repo, "cat-file", "-t", tree) == "tree"
    except DiffError:
        return False


def renderer_changes(repo: Path, commit: str) -> list[str]:
    """Files of the renderer's code that differ between ``commit`` and the working tree."""
    top = Path(_git(repo, "rev-parse", "--show-toplevel"))
    paths = [str(top / p) for p in RENDERER_PATHS]
    return sorted(_git(repo, "diff", "--name-only", commit, "--", *paths).splitlines())


# --- rendering and comparing --------------------------------------------------------------------------------

Identity = tuple[str, str, str, str, str]
"""(target, apiVersion, kind, namespace, name)."""


@dataclass(frozen=True)
class Resource:
    path: str
    """``<target>/<file>``, as ``fleet render`` writes it."""
    body: dict[str, Any]

    @property
    def identity(self) -> Identity:
        metadata = self.body.get("metadata") or {}
        return (
            self.path.split("/", 1)[0],
            str(self.body.get("apiVersion", "")),
            str(self.body.get("kind", "")),
            str(metadata.get("namespace", "")),
            str(metadata.get("name", "")),
        )

    @property
    def group(self) -> str:
        """The definition file(s) it was rendered from, else its instance label: one section per job."""
        metadata = self.body.get("metadata") or {}
        source = (metadata.get("annotations") or {}).get(SOURCE_ANNOTATION)
        instance = (metadata.get("labels") or {}).get(INSTANCE_LABEL)
        return str(source or instance or "(no source)")


def rendered_files(repository: Repository) -> dict[str, str]:
    """Every target's files (``<target>/<path>`` -> YAML), unvalidated: the base side."""
    import render
    from render.output import render_files

    return render_files(render.synth_all(repository))


def resources(files: Mapping[str, str]) -> dict[Identity, Resource]:
    found: dict[Identity, Resource] = {}
    for path, text in sorted(files.items()):
        for body in yaml.load_all(text, Loader=_Loader):
            if isinstance(body, dict):
                resource = Resource(path, body)
                found[resource.identity] = resource
    return found


@dataclass(frozen=True)
class Change:
    status: str
    """``added``, ``modified`` or ``deleted``."""
    identity: Identity
    base: Resource | None
    head: Resource | None
    diff: str
    """A unified diff of the two YAML texts, Secret values masked."""
    added_lines: int
    removed_lines: int

    @property
    def target(self) -> str:
        return self.identity[0]

    @property
    def group(self) -> str:
        resource = self.head or self.base
        assert resource is not None
        return resource.group

    @property
    def title(self) -> str:
        _, api_version, kind, namespace, name = self.identity
        return f"{api_version} {kind} {namespace + '/' if namespace else ''}{name}"


def compare(base: Mapping[Identity, Resource], head: Mapping[Identity, Resource]) -> list[Change]:
    """One `Change` per resource added, modified or deleted, in identity order."""
    from render.output import to_yaml

    changes: list[Change] = []
    for identity in sorted(set(base) | set(head)):
        old, new = base.get(identity), head.get(identity)
        old_body = _masked(old.body, new.body if new else None, "before") if old else None
        new_body = _masked(new.body, old.body if old else None, "after") if new else None
        if old_body == new_body:
            continue
        old_text = to_yaml(old_body) if old_body is not None else ""
        new_text = to_yaml(new_body) if new_body is not None else ""
        lines = list(
            difflib.unified_diff(
                old_text.splitlines(keepends=True),
                new_text.splitlines(keepends=True),
                fromfile=f"a/{old.path}" if old else "/dev/null",
                tofile=f"b/{new.path}" if new else "/dev/null",
            )
        )
        diff = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
        removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
        status = "added" if old is None else "deleted" if new is None else "modified"
        changes.append(Change(status, identity, old, new, diff, added, removed))
    return changes


def _masked(body: Any, other: Any, side: str) -> Any:
    """``body`` with the values of every Secret's data masked; ``other`` is the other side, for equality."""
    if isinstance(body, list):
        others = other if isinstance(other, list) else []
        return [_masked(item, others[i] if i < len(others) else None, side) for i, item in enumerate(body)]
    if not isinstance(body, dict):
        return body
    other_map = other if isinstance(other, dict) else {}
    secret = body.get("kind") == "Secret" and body.get("apiVersion") == "v1"
    masked: dict[str, Any] = {}
    for key, value in body.items():
        if secret and key in ("data", "stringData") and isinstance(value, dict):
            theirs_value = other_map.get(key)
            theirs: dict[str, Any] = theirs_value if isinstance(theirs_value, dict) else {}
            masked[key] = {
                name: "***" if theirs.get(name) == secret_value else f"*** ({side})"
                for name, secret_value in value.items()
            }
        else:
            masked[key] = _masked(value, other_map.get(key), side)
    return masked


# --- reports ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    base: str
    """How the base was chosen and its commit, for the heading."""
    changes: list[Change]
    renderer_files: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CHANGED if self.changes else EXIT_SAME


def _counts(changes: list[Change]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"added": 0, "modified": 0, "deleted": 0, "+": 0, "-": 0})
    for change in changes:
        row = counts[change.target]
        row[change.status] += 1
        row["+"] += change.added_lines
        row["-"] += change.removed_lines
    return dict(sorted(counts.items()))


def _renderer_note(report: Report) -> str:
    if not report.renderer_files:
        return ""
    shown = ", ".join(report.renderer_files[:10]) + (" …" if len(report.renderer_files) > 10 else "")
    return (
        f"Note: the renderer's code differs from the base ({shown}). Both sides were rendered with this "
        "change's renderer, so this diff shows what the changed jobs/, clusters/ and policies/ do; what the "
        "renderer change does shows in this change's manifests/."
    )


def format_text(report: Report) -> str:
    out = [f"base: {report.base}"]
    if not report.changes:
        out.append("no changes to the rendered manifests")
    for target, row in _counts(report.changes).items():
        out.append(
            f"{target}: {row['added']} added, {row['modified']} modified, {row['deleted']} deleted "
            f"(+{row['+']} -{row['-']} lines)"
        )
    for change in report.changes:
        out.append(
            f"  {change.status:<8} {change.target}: {change.title} (+{change.added_lines} -{change.removed_lines})"
        )
    note = _renderer_note(report)
    if note:
        out.append(note)
    text = "\n".join(out) + "\n"
    if report.changes:
        text += "\n" + "".join(change.diff for change in report.changes)
    return text


def format_markdown(report: Report, limit: int = MARKDOWN_LIMIT) -> str:
    """A pull-request comment: a summary, one collapsible section per job, at most ``limit`` characters."""
    head = [f"#### Hub manifests (`fleet render --diff`)\n\nBase: {_inline(report.base)}\n\n"]
    if not report.changes:
        head.append("No changes to the rendered manifests.\n")
    else:
        head.append("| target | added | modified | deleted | lines |\n|---|---:|---:|---:|---:|\n")
        for target, row in _counts(report.changes).items():
            head.append(
                f"| {target} | {row['added']} | {row['modified']} | {row['deleted']} | +{row['+']} −{row['-']} |\n"
            )
    note = _renderer_note(report)
    if note:
        head.append(f"\n> {note}\n")
    text = "".join(head)

    groups: dict[str, list[Change]] = defaultdict(list)
    for change in report.changes:
        groups[change.group].append(change)
    total = len(report.changes)
    shown = 0
    sections: list[str] = []
    # Room for the truncation note, which names how much is left out.
    budget = limit - len(text) - 400
    for name in sorted(groups):
        changes = groups[name]
        full = _section(name, changes, with_diffs=True)
        if len(full) <= budget:
            sections.append(full)
            budget -= len(full)
            shown += len(changes)
            continue
        brief = _section(name, changes, with_diffs=False)
        if len(brief) <= budget:
            sections.append(brief)
            budget -= len(brief)
    text += "".join(sections)
    if shown < total:
        text += (
            f"\n> [!WARNING]\n> Truncated: the diffs of {total - shown} of {total} changed resources are "
            f"left out to stay under {limit:,} characters. Run `fleet render --diff` for them all.\n"
        )
    return text if len(text) <= limit else text[: limit - 40] + "\n\n(truncated at the size cap)\n"


def _section(name: str, changes: list[Change], *, with_diffs: bool) -> str:
    counts: dict[str, int] = defaultdict(int)
    for change in changes:
        counts[change.status] += 1
    added = sum(c.added_lines for c in changes)
    removed = sum(c.removed_lines for c in changes)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    out = [f"\n<details><summary><code>{html.escape(name)}</code>: {summary} (+{added} −{removed})</summary>\n\n"]
    for change in changes:
        out.append(
            f"- **{change.status}** {change.target}: {_inline(change.title)} "
            f"(+{change.added_lines} −{change.removed_lines})\n"
        )
        if with_diffs:
            fence = "`" * max(3, _longest_backtick_run(change.diff) + 1)
            out.append(f"\n{fence}diff\n{change.diff}{fence}\n\n")
    if not with_diffs:
        out.append("\n(diffs left out: size cap)\n")
    out.append("</details>\n")
    return "".join(out)


def _inline(text: str) -> str:
    fence = "`" * (_longest_backtick_run(text) + 1)
    return f"{fence}{text}{fence}"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


# --- the command --------------------------------------------------------------------------------------------


def render_diff(
    repo: Path,
    head_files: Callable[[], dict[str, str]],
    base_ref: str | None = None,
) -> Report:
    """Compare the base's render with ``head_files()`` (the working tree's validated render).

    Raises `DiffError` when the base cannot be read or does not load.
    """
    from fleet.errors import InvalidRepository
    from fleet.repository import load_repository

    commit, description = resolve_base(repo, base_ref)
    with base_tree(repo, commit) as root:
        try:
            base_repository = load_repository(root)
        except InvalidRepository as error:
            problems = "\n  ".join(str(p) for p in error.problems)
            raise DiffError(f"the base ({description}, {commit[:12]}) does not load:\n  {problems}") from error
        base_files = rendered_files(base_repository)
    changes = compare(resources(base_files), resources(head_files()))
    return Report(f"{description} ({commit[:12]})", changes, renderer_changes(repo, commit))


def run_render_diff(
    repo: Path,
    head_files: Callable[[], dict[str, str]],
    base: str | None,
    output: str,
) -> int:
    """``fleet render --diff``: print the report, return the exit code."""
    import click

    try:
        report = render_diff(repo, head_files, base)
    except DiffError as error:
        click.echo(f"fleet render --diff: {error}", err=True)
        return EXIT_ERROR
    click.echo(format_markdown(report) if output == "markdown" else format_text(report), nl=False)
    return report.exit_code
