"""Property tests, a bounded fuzz of the loader (derandomized hypothesis, a fixed number of examples each):
whatever people write (documents, text, corrupted bytes, any mix of entries in the folders), it either loads
or raises InvalidRepository whose problems point into the repository, never reading outside it; and rewriting
a valid file without changing its meaning keeps it valid."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet.errors import InvalidRepository
from fleet.repository import FOLDERS, Repository, load_repository
from fleet.schemas import definition_schemas

# The CEL library the placement checks import on first use raises the recursion limit, mid-test.
pytestmark = pytest.mark.filterwarnings("ignore:The recursion limit will not be reset")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_FILES = sorted(p.relative_to(ROOT).as_posix() for folder in FOLDERS for p in (ROOT / folder).glob("*.yaml"))

_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples on every run: a failure here is a bug, never a flake
    suppress_health_check=[HealthCheck.too_slow],
)


def _field_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        yield from (node.get("properties") or {})
        for value in node.values():
            yield from _field_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _field_names(value)


FIELD_NAMES = sorted(set(_field_names(list(definition_schemas().values()))))
"""Every field name of the three kinds, so that random documents hit real fields as well as unknown ones."""

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=16)
    | st.sampled_from(["500m", "4Gi", "-1", "4 Gi", "1e3", "digits", "In", "NodePort", "fedprox", "/data", "flower"])
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=8,
)
documents = st.dictionaries(keys, values, max_size=8)


@contextmanager
def _example_copy() -> Iterator[Path]:
    # Hypothesis runs many examples per test; a function-scoped tmp_path would be shared by all of them.
    with tempfile.TemporaryDirectory() as directory:
        repo = Path(directory)
        for folder in FOLDERS:
            shutil.copytree(ROOT / folder, repo / folder)
        yield repo


def _load(repo: Path) -> Repository | None:
    """The repository, or None after checking that every problem points at a file and line of ``repo``."""
    try:
        return load_repository(repo)
    except InvalidRepository as error:
        assert error.problems
        for problem in error.problems:
            path = repo / problem.file
            assert path.is_file(), problem
            assert problem.message, problem
            if problem.line is not None:
                # YAML also breaks lines at \r, \x85, \u2028 and \u2029; splitlines() counts all of those.
                lines = len(path.read_text(encoding="utf-8", errors="replace").splitlines()) + 1
                assert 1 <= problem.line <= lines, problem
        return None


def _dump(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


@_SETTINGS
@given(folder=st.sampled_from(sorted(FOLDERS)), document=documents)
def test_random_documents_load_or_raise_invalid_repository(folder: str, document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        repo = Path(directory)
        (repo / folder).mkdir()
        (repo / folder / "random.yaml").write_text(_dump(document), encoding="utf-8")
        _load(repo)


# --- mutations of the example documents ---------------------------------------------------------------------


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _retyped(value: Any, draw: st.DrawFn) -> Any:
    """The same content as another type: 5 -> "5", "true" -> True, x -> [x], x -> {"value": x}."""
    options: list[Any] = [str(value), [value], {"value": value}, None, not bool(value)]
    if isinstance(value, str):
        options += [value.upper(), f" {value} ", value + "x", ""]
    if isinstance(value, int | float) and not isinstance(value, bool):
        options += [-value, value + 0.5, float(value), 10**12]
    return draw(st.sampled_from(options))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    file = draw(st.sampled_from(EXAMPLE_FILES))
    document: Any = yaml.safe_load((ROOT / file).read_text(encoding="utf-8"))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(list(_paths(document))))
        operation = draw(st.sampled_from(["drop", "insert", "replace", "retype", "string"]))
        if not path:  # the document itself
            document = draw(values) if operation in ("replace", "string") else document
            continue
        parent, last = _at(document, path[:-1]), path[-1]
        if operation == "drop":
            del parent[last]
        elif operation == "insert" and isinstance(parent, dict):
            parent[draw(keys)] = draw(values)
        elif operation == "insert":
            parent.insert(last, draw(values))
        elif operation == "replace":
            parent[last] = draw(values)
        elif operation == "retype":
            parent[last] = _retyped(parent[last], draw)
        else:
            parent[last] = draw(st.text(max_size=20))
    return file, document


@settings(_SETTINGS, max_examples=60)  # each loads the whole example, cross-file checks included
@given(mutation=mutated())
def test_mutated_examples_load_or_raise_invalid_repository(mutation: tuple[str, Any]) -> None:
    file, document = mutation
    with _example_copy() as repo:
        (repo / file).write_text(_dump(document), encoding="utf-8")
        _load(repo)


# --- raw text ----------------------------------------------------------------------------------------------

yaml_text = st.text(alphabet=st.sampled_from(list("abc019 :-,[]{}#&*!|>'\"%@`?~.\n\t/\\")), max_size=80)


@_SETTINGS
@given(text=yaml_text)
@example(text="name: a\nlabels: &a [*a]\n")  # an alias inside its own anchor: a recursive document
@example(text="name: a\nlabels: &a {x: *a}\n")
@example(text="[" * 2000 + "]" * 2000)  # nesting deeper than Python's recursion limit
@example(text="? [a, b]\n: c\n")  # a key YAML can parse but Python cannot hash
@example(text="name: !!python/object:os.system x\n")  # a tag the safe loader refuses
@example(text="name: a\nclusterSet: a\ncapacity: {cpu: '1e999999999'}\n")  # beyond decimal's range
@example(text="\ufeffname: a\n")
@example(text="name: a\x00\n")
@example(text="~: 1\ntrue: 2\n1.5: 3\n")
def test_any_text_loads_or_raises_invalid_repository(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        repo = Path(directory)
        (repo / "clusters").mkdir()
        (repo / "clusters" / "text.yaml").write_text(text, encoding="utf-8")
        _load(repo)


# --- rewriting without changing the meaning ---------------------------------------------------------------


def _shuffled(node: Any, rng: random.Random) -> Any:
    if isinstance(node, dict):
        items = list(node.items())
        rng.shuffle(items)
        return {key: _shuffled(value, rng) for key, value in items}
    if isinstance(node, list):
        return [_shuffled(value, rng) for value in node]
    return node


@settings(_SETTINGS, max_examples=10)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    flow=st.sampled_from([False, True, None]),
    quote=st.sampled_from([None, '"', "'"]),  # quoted scalars keep their type through explicit !!int tags
    indent=st.integers(min_value=2, max_value=6),
)
def test_rewriting_valid_files_keeps_them_valid_and_equal(
    seed: int, flow: bool | None, quote: str | None, indent: int
) -> None:
    original = load_repository(ROOT)
    rng = random.Random(seed)
    with _example_copy() as repo:
        for file in EXAMPLE_FILES:
            document = yaml.safe_load((repo / file).read_text(encoding="utf-8"))
            text = yaml.safe_dump(
                _shuffled(document, rng),
                sort_keys=False,
                default_flow_style=flow,
                default_style=quote,
                indent=indent,
            )
            (repo / file).write_text(text, encoding="utf-8")
        rewritten = load_repository(repo)
    assert rewritten.jobs == original.jobs
    assert rewritten.clusters == original.clusters
    assert rewritten.policies == original.policies


# --- raw bytes of the real files ------------------------------------------------------------------------------


@st.composite
def corrupted(draw: st.DrawFn) -> tuple[str, bytes]:
    """One example file with bytes flipped, cut, or inserted (invalid UTF-8, control bytes, a BOM mid-file)."""
    file = draw(st.sampled_from(EXAMPLE_FILES))
    data = bytearray((ROOT / file).read_bytes())
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif action == "cut":
            del data[at : at + draw(st.integers(min_value=1, max_value=40))]
        else:
            noise = draw(
                st.binary(max_size=6) | st.sampled_from([b"\xef\xbb\xbf", b"\x00", b"\t", b"\r", b": ", b"- "])
            )
            data[at:at] = noise
    return file, bytes(data)


@settings(_SETTINGS, max_examples=80)
@given(corruption=corrupted())
def test_corrupted_bytes_of_the_example_load_or_raise_invalid_repository(corruption: tuple[str, bytes]) -> None:
    file, data = corruption
    with _example_copy() as repo:
        (repo / file).write_bytes(data)
        _load(repo)


# --- what the folders hold ----------------------------------------------------------------------------------

_ENTRY_KINDS = ["definition", "other-file", "dotfile", "no-extension", "upper-case", "folder", "link", "broken-link"]


@settings(_SETTINGS, max_examples=40)
@given(
    entries=st.lists(
        st.tuples(st.sampled_from(sorted(FOLDERS)), st.sampled_from(_ENTRY_KINDS)),
        min_size=1,
        max_size=6,
    )
)
def test_any_mix_of_entries_loads_or_is_reported_without_reading_outside(entries: list[tuple[str, str]]) -> None:
    """Whatever sits in the folders, the load never follows a link out of the repository: the secret beside
    the repository, which every link points at, is never in a problem."""
    secret = "s3cr3t-value-outside-the-repository"
    with tempfile.TemporaryDirectory() as directory:
        outside = Path(directory) / "outside.yaml"
        outside.write_text(f"name: {secret}\n", encoding="utf-8")
        repo = Path(directory) / "repo"
        for folder in FOLDERS:
            shutil.copytree(ROOT / folder, repo / folder)
        expected_refusals = 0
        for number, (folder, kind) in enumerate(entries):
            entry = repo / folder / f"entry-{number}"
            if kind == "definition":
                entry.with_suffix(".yaml").write_text("name: Not_A_Name\n", encoding="utf-8")
                continue  # loaded: a bad definition, reported with its file and line like any other
            if kind == "other-file":
                entry.with_suffix(".md").write_text(secret, encoding="utf-8")
            elif kind == "dotfile":
                (repo / folder / f".entry-{number}").write_text(secret, encoding="utf-8")
            else:
                expected_refusals += 1
                if kind == "no-extension":
                    entry.write_text("# not read\n", encoding="utf-8")
                elif kind == "upper-case":
                    entry.with_suffix(".YAML").write_text("# not read\n", encoding="utf-8")
                elif kind == "folder":
                    entry.with_suffix(".yaml").mkdir()
                elif kind == "link":
                    entry.with_suffix(".yaml").symlink_to(outside)
                else:
                    entry.with_suffix(".yaml").symlink_to(Path(directory) / "nothing.yaml")
        try:
            load_repository(repo)
        except InvalidRepository as error:
            assert not [problem for problem in error.problems if secret in str(problem)], error.problems
            refused = [p for p in error.problems if p.line is None and Path(p.file).name.startswith("entry-")]
            assert len(refused) >= expected_refusals, error.problems
            return
        assert expected_refusals == 0 and all(kind in ("other-file", "dotfile") for _, kind in entries)
