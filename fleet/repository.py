"""Load a fleet repository (``jobs/``, ``clusters/``, ``policies/``) and check it as a whole.

`load_repository` either returns a fully valid `Repository` or raises `InvalidRepository` carrying every
problem found, in every file, at once.

What counts as a definition. Every entry directly in ``jobs/``, ``clusters/`` and ``policies/`` is accounted
for, so that no definition silently drops out of the render (GitOps would then prune what it rendered):

- a regular file named ``*.yaml`` or ``*.yml`` is a definition, and is loaded;
- a name starting with ``.`` is ignored whatever it is (``.gitkeep``, ``.DS_Store``, editors' swap files, a
  ``.archive/`` folder kept on purpose), and so is a regular file with another extension (``README.md``,
  ``notes.txt``, an editor's ``x.yaml~``): those are never definitions;
- reported, so that the load fails: a regular file whose extension is ``.yaml``/``.yml`` in another case
  (``x.YAML``, ``x.Yml``: other tools would read it, fleet would not), a regular file without an extension
  (a definition whose extension was forgotten); a symbolic link, whatever its name and wherever it points,
  even into the repository, and broken ones (Git stores a link as a link, which Argo CD and Flux treat each
  their own way, and following one would read, and echo in problems, a file outside the repository); a
  folder (named ``x.yaml``: expected a regular file; otherwise: expected no sub-folders, since definitions in
  one would not be read); a FIFO, socket or device (never opened: opening a FIFO blocks until a writer comes);
- ``jobs/`` (``clusters/``, ``policies/``) itself may be absent; when present it must be a folder, not a
  symbolic link to one nor a file.

Links are never followed, not even between the check and the read: each folder is opened with ``O_NOFOLLOW``
and its files are opened relative to it with ``O_NOFOLLOW | O_NONBLOCK``, then checked again with ``fstat``, so a
file swapped for a link or a FIFO after the check is reported, never read. A problem about an entry names it
relative to the repository and has no line or field.
"""

from __future__ import annotations

import difflib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fleet.claims import CAPACITY_CLAIMS, MAX_CUSTOM_CLUSTER_CLAIMS
from fleet.errors import InvalidRepository, Problem, field_path
from fleet.hub import CONTROLLER_NAMESPACE, POLICY_NAMESPACE
from fleet.models import Cluster, DataLocalityPolicy, Job, ListenerType, LocalityRules
from fleet.placement import PlacementResult, evaluate, governing_policies, placement_spec
from fleet.yaml_nesting import first_too_deep

M = TypeVar("M", bound=BaseModel)

FOLDERS: dict[str, type[BaseModel]] = {"jobs": Job, "clusters": Cluster, "policies": DataLocalityPolicy}
"""Each folder holds YAML documents of one kind, one document per file."""


@dataclass(frozen=True)
class Source:
    """Where a definition came from: its file relative to the repository root, and field -> line."""

    file: str
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict, compare=False, repr=False)

    def line(self, *loc: str | int) -> int | None:
        """The line of the deepest known field on the path ``loc``."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None

    def problem(self, loc: tuple[str | int, ...], message: str) -> Problem:
        return Problem(self.file, self.line(*loc), field_path(loc), message)


@dataclass(frozen=True)
class Repository:
    root: Path
    jobs: dict[str, Job]
    clusters: dict[str, Cluster]
    policies: dict[str, DataLocalityPolicy]
    sources: dict[tuple[str, str], Source]
    """(kind, name) -> the file it came from."""

    def source(self, definition: Job | Cluster | DataLocalityPolicy) -> Source:
        return self.sources[(definition.kind, definition.name)]

    def bound_cluster_sets(self, job: Job) -> tuple[str, ...]:
        """The ManagedClusterSets the renderer binds to the job's namespace: those the job may use."""
        return job.cluster_sets

    def placement(self, job: Job, *, explain: bool = True) -> PlacementResult:
        """Where the job's Placement puts it, over clusters/ (`fleet.placement.evaluate` of its spec)."""
        spec = placement_spec(job, self.policies.values())
        return evaluate(spec, self.bound_cluster_sets(job), list(self.clusters.values()), explain=explain)


def load_repository(root: Path) -> Repository:
    """Load and check every definition under ``root``; raise `InvalidRepository` with all problems found."""
    problems: list[Problem] = []
    loaded: dict[str, list[tuple[Any, Source]]] = {}
    for folder, model in FOLDERS.items():
        loaded[folder] = []
        for source, text in _definition_files(root, folder, problems):
            result = _load_document(text, source, model, problems)
            if result is not None:
                loaded[folder].append(result)

    jobs = _by_name(loaded["jobs"], problems)
    clusters = _by_name(loaded["clusters"], problems)
    policies = _by_name(loaded["policies"], problems)
    sources = {(d.kind, d.name): s for items in loaded.values() for d, s in items}
    repository = Repository(
        root=root,
        jobs={name: d for name, (d, _) in sorted(jobs.items())},
        clusters={name: d for name, (d, _) in sorted(clusters.items())},
        policies={name: d for name, (d, _) in sorted(policies.items())},
        sources=sources,
    )
    problems.extend(check_repository(repository))
    if problems:
        raise InvalidRepository(problems)
    return repository


def _by_name(items: list[tuple[M, Source]], problems: list[Problem]) -> dict[str, tuple[M, Source]]:
    seen: dict[str, tuple[M, Source]] = {}
    for definition, source in items:
        name: str = definition.name  # type: ignore[attr-defined]
        if name in seen:
            first = seen[name][1]
            problems.append(
                source.problem(
                    ("name",),
                    f"expected a unique name, but {name!r} is also defined in {first.file}:{first.line('name')}",
                )
            )
        else:
            seen[name] = (definition, source)
    return seen


# --- the files and folders themselves -------------------------------------------------------------------------

SUFFIXES = (".yaml", ".yml")
"""The extensions of a definition's file, in lower case."""

_NOT_A_LINK = "expected a regular file, not a symbolic link (fleet never follows links: put the file itself here)"
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
"""O_NOFOLLOW: a link is refused, not followed; O_NONBLOCK: a FIFO swapped in after the check does not block."""


def _definition_files(root: Path, folder: str, problems: list[Problem]) -> Iterator[tuple[Source, str]]:
    """The text of each definition directly in ``root / folder``, by name; every other entry is ignored or
    reported (see the module's docstring). Nothing is followed or opened before it is known not to be a link."""
    try:
        mode = os.lstat(root / folder).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        problems.append(Problem(folder, None, "", f"expected a readable folder: {error.strerror}"))
        return
    if not stat.S_ISDIR(mode):
        problems.append(Problem(folder, None, "", _not_a_folder(mode)))
        return
    try:
        folder_fd = os.open(root / folder, _FOLDER_FLAGS)
    except OSError as error:  # swapped for a link or a file since the check; unreadable
        swapped = {errno.ELOOP: stat.S_IFLNK, errno.ENOTDIR: stat.S_IFREG}.get(error.errno or 0)
        message = _not_a_folder(swapped) if swapped else f"expected a readable folder: {error.strerror}"
        problems.append(Problem(folder, None, "", message))
        return
    try:
        for name in sorted(os.listdir(folder_fd)):  # noqa: PTH208 (by descriptor: the folder checked is the one listed)
            if name.startswith("."):
                continue
            file = f"{folder}/{name}"
            try:
                mode = os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:  # removed since the listing
                continue
            except OSError as error:
                problems.append(Problem(file, None, "", f"expected a readable file: {error.strerror}"))
                continue
            problem = _refusal(folder, name, mode)
            if problem:
                problems.append(Problem(file, None, "", problem))
            elif PurePosixPath(name).suffix in SUFFIXES:
                text = _read(folder_fd, name, file, problems)
                if text is not None:
                    yield Source(file), text
    finally:
        os.close(folder_fd)


def _refusal(folder: str, name: str, mode: int) -> str:
    """Why the entry ``name`` of ``folder`` (not a dotfile; ``mode`` from lstat) is reported, or "" if it is not."""
    suffix = PurePosixPath(name).suffix
    if stat.S_ISLNK(mode):
        return _NOT_A_LINK
    if stat.S_ISDIR(mode):
        if suffix.lower() in SUFFIXES:
            return "expected a regular file, not a folder"
        return (
            f"expected no sub-folders: only the files directly in {folder}/ are read "
            "(and names starting with '.' are ignored)"
        )
    if not stat.S_ISREG(mode):
        return f"expected a regular file, not {_kind(mode)}"
    if suffix in SUFFIXES:
        return ""
    if suffix.lower() in SUFFIXES:
        return f"expected the extension .yaml or .yml (lower case), got {suffix!r}: fleet would not read this file"
    if not suffix:
        return (
            "expected the extension .yaml or .yml: fleet does not read a file without one "
            "(give other files an extension, such as .md)"
        )
    return ""  # README.md, notes.txt: not definitions


def _read(folder_fd: int, name: str, file: str, problems: list[Problem]) -> str | None:
    """The UTF-8 text of the regular file ``name`` in the folder open as ``folder_fd``, opened without following
    a link and checked again once open (the entry may have changed since it was checked)."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=folder_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            problems.append(Problem(file, None, "", _NOT_A_LINK))
        else:
            problems.append(Problem(file, None, "", f"expected a readable UTF-8 YAML file: {error}"))
        return None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            problems.append(Problem(file, None, "", f"expected a regular file, not {_kind(mode)}"))
            return None
        with os.fdopen(fd, encoding="utf-8", closefd=False) as handle:  # text mode, as Path.read_text
            return handle.read()
    except (OSError, UnicodeDecodeError) as error:
        problems.append(Problem(file, None, "", f"expected a readable UTF-8 YAML file: {error}"))
        return None
    finally:
        os.close(fd)


def _not_a_folder(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return (
            "expected a folder, not a symbolic link "
            "(fleet never follows links: keep the definitions in the repository itself)"
        )
    return f"expected a folder, not {_kind(mode)}"


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a file"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((kind for test, kind in kinds if test(mode)), "a special file")


# --- one document ---------------------------------------------------------------------------------------------


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's safe loader where PyYAML has it: composes nodes (with their lines) once, then constructs."""


def _load_document(text: str, source: Source, model: type[M], problems: list[Problem]) -> tuple[M, Source] | None:
    too_deep = first_too_deep(text, MAX_NESTING)
    if too_deep is not None:  # before composing: PyYAML's composers recurse once per level
        problems.append(Problem(source.file, too_deep, "", f"expected YAML nested at most {MAX_NESTING} levels"))
        return None
    loader = _Loader(text)
    try:
        return _load_nodes(loader, text, source, model, problems)
    finally:
        loader.dispose()


def _load_nodes(
    loader: yaml.SafeLoader, text: str, source: Source, model: type[M], problems: list[Problem]
) -> tuple[M, Source] | None:
    nodes: list[yaml.Node | None] = []
    try:
        while loader.check_node():
            nodes.append(loader.get_node())
    except yaml.YAMLError as error:
        reported: yaml.YAMLError = error
        if not isinstance(loader, yaml.SafeLoader):
            # libyaml's messages leave out the offending character; the pure-Python parser names it.
            try:
                list(yaml.compose_all(text, Loader=yaml.SafeLoader))
            except yaml.YAMLError as detailed:
                reported = detailed
        mark = getattr(reported, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(reported, "problem", None) or str(reported)
        problems.append(Problem(source.file, line, "", f"expected valid YAML: {reason}"))
        return None
    documents = [n for n in nodes if n is not None]
    if len(documents) != 1:
        starts = [
            e.start_mark.line + 1
            for e in yaml.parse(text, Loader=_Loader)
            if isinstance(e, yaml.DocumentStartEvent) and e.start_mark is not None
        ]
        line = starts[1] if len(starts) > 1 else None  # where the second document starts
        problems.append(Problem(source.file, line, "", f"expected exactly one YAML document, found {len(documents)}"))
        return None
    node = documents[0]
    duplicates: list[Problem] = []
    _positions(node, source, duplicates)
    if duplicates:
        problems.extend(duplicates)
        return None
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as error:  # unhashable keys, tags a safe loader refuses
        mark = getattr(error, "problem_mark", None) or node.start_mark
        reason = getattr(error, "problem", None) or str(error)
        problems.append(Problem(source.file, mark.line + 1, "", f"expected valid YAML: {reason}"))
        return None
    if not isinstance(data, dict):
        problems.append(
            Problem(source.file, node.start_mark.line + 1, "", f"expected a mapping of {model.__name__} fields")
        )
        return None
    try:
        # by_name=False: YAML spells fields as the JSON Schema does (maxClients); max_clients is an unknown field.
        return model.model_validate(data, by_name=False), source
    except ValidationError as error:
        problems.extend(_problems_from(error, source, model))
        return None


MAX_VALUES = 100_000
"""Values one definition may hold once its YAML aliases are expanded (a job holds about a hundred)."""

MAX_NESTING = 64
"""Levels of nesting one definition may have, aliases expanded (the deepest definition nests 6). Far below what
either parser or Python's stack tolerates: libyaml (PyYAML 6.0.4) refuses 1,001 levels, the pure-Python
composer exhausts Python's default recursion limit near 500."""


def _positions(node: yaml.Node, source: Source, problems: list[Problem]) -> None:
    """Record the line of every field; report duplicate keys and recursive aliases. Iterative, so that
    however deep a document nests, it yields problems and never a RecursionError."""
    stack: list[tuple[yaml.Node, tuple[str | int, ...], frozenset[int]]] = [(node, (), frozenset())]
    visited = 0
    while stack:
        current, loc, enclosing = stack.pop()
        visited += 1
        if visited > MAX_VALUES:  # aliases of aliases: a few hundred bytes can expand to millions of values
            problems.append(
                Problem(
                    source.file,
                    node.start_mark.line + 1,
                    "",
                    f"expected at most {MAX_VALUES:,} values with every alias expanded",
                )
            )
            return
        source.lines.setdefault(loc, current.start_mark.line + 1)
        if len(loc) >= MAX_NESTING and isinstance(current, yaml.CollectionNode):  # deep through aliases
            line = source.lines[loc[:1]]  # the field that nests too deep; the node itself may be an anchor's
            problems.append(
                Problem(source.file, line, field_path(loc[:1]), f"expected YAML nested at most {MAX_NESTING} levels")
            )
            return
        if id(current) in enclosing:  # an alias to a node that contains it: `a: &x [*x]`
            problems.append(
                Problem(source.file, current.start_mark.line + 1, field_path(loc), "expected no recursive alias")
            )
            continue
        inner = enclosing | {id(current)}
        if isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in current.value:
                name = str(key.value)
                if name in seen:
                    line = key.start_mark.line + 1
                    problems.append(Problem(source.file, line, field_path((*loc, name)), "expected a key only once"))
                seen.add(name)
                source.lines[(*loc, name)] = key.start_mark.line + 1
                stack.append((value, (*loc, name), inner))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                stack.append((item, (*loc, index), inner))


def _field_aliases() -> dict[str, str]:
    """snake_case field name -> its camelCase alias, over every definition model."""
    aliases: dict[str, str] = {}
    pending: list[type[BaseModel]] = list(FOLDERS.values())
    while pending:
        model = pending.pop()
        for name, info in model.model_fields.items():
            if info.alias and info.alias != name:
                aliases[name] = info.alias
            for arg in _types_within(info.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in pending:
                    pending.append(arg)
    return aliases


def _types_within(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _types_within(arg)


_ALIASES = _field_aliases()


def _problems_from(error: ValidationError, source: Source, model: type[BaseModel]) -> Iterator[Problem]:
    items = error.errors(include_url=False)
    # Pydantic adds markers ("[key]", validator names) to some locations; keep document fields only.
    # A validator that checks a defaulted field reports it by its Python name: show the YAML name.
    # An unknown field keeps the spelling it has in the file (max_clients is not maxClients).
    locs = [
        tuple(
            p
            if isinstance(p, int) or (item["type"] == "extra_forbidden" and index == len(item["loc"]) - 1)
            else _ALIASES.get(p, p)
            for index, p in enumerate(item["loc"])
            if isinstance(p, int) or not (p == "[key]" or p.startswith("function-"))
        )
        for item in items
    ]
    for item, loc in zip(items, locs, strict=True):
        # A list whose items failed also reports itself too short (it counts only the valid items): noise.
        if item["type"] == "too_short" and any(other[: len(loc)] == loc and other != loc for other in locs):
            continue
        yield source.problem(loc, _expectation(item, model))


_PATTERNS = {
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$": "a DNS-1123 label (lower-case letters, digits and '-', "
    "starting and ending with a letter or digit)",
    "^/": "an absolute path",
    "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$": "a label value (letters, digits, '-', '_' and '.', "
    "starting and ending alphanumeric)",
}


def _expectation(item: Any, model: type[BaseModel]) -> str:
    kind, ctx, value = item["type"], item.get("ctx") or {}, item.get("input")
    got = "" if kind == "missing" else f", got {value!r}"
    if kind == "missing":
        return "required field is missing"
    if kind == "invalid_key":
        return f"expected a string key (quote it in YAML), got {value!r}"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see the JSON Schema under schemas/)"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}{got}"
    if kind == "enum":
        return f"expected one of {ctx.get('expected')}{got}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return f"expected {_PATTERNS.get(pattern, 'text matching ' + pattern)}{got}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return f"expected a number {op} {bound}{got}"
    if kind == "string_too_long":
        return f"expected at most {ctx.get('max_length')} characters{got}"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} item(s){got}"
    if kind == "string_too_short":
        return f"expected at least {ctx.get('min_length')} character(s){got}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s){got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number{got}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number{got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false{got}"
    if kind == "string_type":
        return f"expected a string (quote it in YAML){got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping{got}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list{got}"
    message = str(item["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message if message.startswith("expected") or "expect" in message else f"expected: {message}"


# --- the repository as a whole --------------------------------------------------------------------------------


def _privacy_rule_problems(job: Job, source: Source, policy: str, where: str, rules: LocalityRules) -> list[Problem]:
    """A policy's requireDifferentialPrivacy and requireSecureAggregation against the job's privacy."""
    problems: list[Problem] = []
    governs = f"policy {policy!r} ({where}) requires"
    required_dp = rules.require_differential_privacy
    dp = job.privacy.differential_privacy
    if required_dp is not None:
        limit = f"{required_dp.max_epsilon:g}"
        if dp is None:
            problems.append(
                source.problem(
                    ("privacy", "differentialPrivacy"),
                    f"expected differential privacy with clipping: fixed and an epsilon of at most {limit}: "
                    f"{governs} it for dataset {job.dataset!r}",
                )
            )
        elif dp.epsilon is None:
            problems.append(
                source.problem(
                    ("privacy", "differentialPrivacy", "epsilon"),
                    f"expected a budget of at most {limit} (with clipping: fixed, which Flower's accountant "
                    f"covers): {governs} differential privacy with maxEpsilon {limit} for dataset {job.dataset!r}",
                )
            )
        elif dp.target_delta > required_dp.max_delta:
            problems.append(
                source.problem(
                    ("privacy", "differentialPrivacy", "targetDelta"),
                    f"expected at most {required_dp.max_delta:g}, got {dp.target_delta:g}: {governs} maxDelta "
                    f"{required_dp.max_delta:g} for dataset {job.dataset!r} (an epsilon means little at a large delta)",
                )
            )
        elif dp.epsilon > required_dp.max_epsilon:
            problems.append(
                source.problem(
                    ("privacy", "differentialPrivacy", "epsilon"),
                    f"expected at most {limit}, got {dp.epsilon:g}: {governs} maxEpsilon {limit} for dataset "
                    f"{job.dataset!r}",
                )
            )
    if rules.require_secure_aggregation and job.privacy.secure_aggregation is None:
        problems.append(
            source.problem(
                ("privacy", "secureAggregation"),
                f"expected secure aggregation (SecAgg+): {governs} it for dataset {job.dataset!r}",
            )
        )
    return problems


def check_repository(repository: Repository) -> list[Problem]:
    """The checks that span files: data held, eligible clusters, policies obeyed, claim limits."""
    problems: list[Problem] = []
    clusters = list(repository.clusters.values())
    for cluster in clusters:
        source = repository.source(cluster)
        custom = len(cluster.datasets) + len(CAPACITY_CLAIMS)
        if custom > MAX_CUSTOM_CLUSTER_CLAIMS:
            problems.append(
                source.problem(
                    ("datasets",),
                    f"expected at most {MAX_CUSTOM_CLUSTER_CLAIMS - len(CAPACITY_CLAIMS)} datasets: the klusterlet "
                    f"reports {MAX_CUSTOM_CLUSTER_CLAIMS} custom ClusterClaims by default and {len(CAPACITY_CLAIMS)} "
                    f"are capacity claims, but the cluster claims {len(cluster.datasets)}",
                )
            )

    problems += _namespace_and_port_clashes(repository)
    problems += _policies_governing_nothing(repository)
    for job in repository.jobs.values():
        source = repository.source(job)
        policies = governing_policies(job, repository.policies.values())
        for policy in policies:
            rules = policy.rules
            where = repository.source(policy).file
            if rules.require_tls and not job.tls:
                problems.append(
                    source.problem(
                        ("tls",),
                        f"expected true: policy {policy.name!r} ({where}) requires TLS for dataset {job.dataset!r}",
                    )
                )
            if job.min_available_clients < rules.min_clients_per_round:
                problems.append(
                    source.problem(
                        ("minAvailableClients",),
                        f"expected at least {rules.min_clients_per_round}: policy {policy.name!r} ({where}) "
                        f"requires that many clients per round for dataset {job.dataset!r}",
                    )
                )
            problems += _privacy_rule_problems(job, source, policy.name, where, rules)

        holders = [c for c in clusters if job.dataset in c.datasets]
        if not holders:
            problems.append(
                source.problem(
                    ("dataset",),
                    f"expected a dataset that some cluster under clusters/ holds; none holds {job.dataset!r}",
                )
            )
            continue
        result = repository.placement(job, explain=False)
        if len(result.feasible) < job.min_available_clients:
            result = repository.placement(job)  # again, with the reasons, for the message
            out = "; ".join(
                f"{d.cluster}: {d.reasons[0]}"
                for d in result.decisions
                if not d.selected and d.cluster in {c.name for c in holders}
            )
            problems.append(
                source.problem(
                    ("minAvailableClients",),
                    f"expected at most {len(result.feasible)}, the number of eligible clusters "
                    f"({', '.join(result.feasible) or 'none'}); of the clusters holding {job.dataset!r}: {out}",
                )
            )
    return problems


def _policies_governing_nothing(repository: Repository) -> list[Problem]:
    """A policy whose datasets no cluster holds protects nothing: a typo (`digit` for `digits`) would switch it
    off silently. So a policy must govern some held dataset, and a name one edit away from a held one is a typo."""
    problems: list[Problem] = []
    held = sorted({dataset for cluster in repository.clusters.values() for dataset in cluster.datasets})
    for policy in repository.policies.values():
        source = repository.source(policy)
        governs_held = any(dataset in held for dataset in policy.datasets)
        for index, dataset in enumerate(policy.datasets):
            if dataset in held:
                continue
            close = difflib.get_close_matches(dataset, held, n=3, cutoff=0.8)
            if governs_held and not close:
                continue  # a dataset not held yet, governed before it arrives
            hint = f"; did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
            problems.append(
                source.problem(
                    ("datasets", index),
                    f"expected a dataset some cluster under clusters/ holds ({', '.join(held) or 'none is held'}), "
                    f"got {dataset!r}{hint}",
                )
            )
    return problems


_SYSTEM_NAMESPACE_PREFIXES = ("kube-", "openshift", "open-cluster-management")


def _namespace_and_port_clashes(repository: Repository) -> list[Problem]:
    """A job's namespace must be its own on the hub (not one the renderer writes for something else, which GitOps
    would then prune with the job; not a managed cluster's); a NodePort is unique across the whole hub."""
    problems: list[Problem] = []
    ports: dict[int, tuple[str, str]] = {}
    """NodePort -> (job, listener) that uses it first."""
    for job in repository.jobs.values():
        source = repository.source(job)
        namespace = job.namespace
        why = ""
        if namespace in (CONTROLLER_NAMESPACE, POLICY_NAMESPACE, "default"):
            why = "a namespace the renderer or Kubernetes owns"
        elif namespace.startswith(_SYSTEM_NAMESPACE_PREFIXES):
            why = "a system namespace"
        elif namespace in repository.clusters:
            why = f"the hub namespace of managed cluster {namespace!r}"
        if why:
            problems.append(
                source.problem(("namespace",), f"expected a namespace of the job's own: {namespace!r} is {why}")
            )
        for index, listener in enumerate(job.listeners):
            if listener.type is not ListenerType.NODE_PORT:
                continue
            first = ports.setdefault(listener.port, (job.name, listener.name))
            if first != (job.name, listener.name):
                other, name = first
                problems.append(
                    source.problem(
                        ("listeners", index, "port"),
                        f"expected a NodePort no other listener uses: listener {name!r} of job {other!r} "
                        f"({repository.source(repository.jobs[other]).file}) uses {listener.port}",
                    )
                )
    return problems
