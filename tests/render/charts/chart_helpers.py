"""Helpers for the chart tests: render a repository, pick objects, validate them strictly."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fleet.repository import Repository

Rendered = dict[str, dict[str, Any]]
"""Output path -> object, for the hub target."""


def synth_hub(repository: Repository) -> Rendered:
    import render

    return {m.path: m.body for m in render.synth(repository, "hub")}


def in_folder(rendered: Rendered, folder: str) -> Rendered:
    """The objects written directly in ``folder`` (not in its sub-folders)."""
    return {path: body for path, body in rendered.items() if path.rpartition("/")[0] == folder}


def one(rendered: Rendered, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [b for b in rendered.values() if b["kind"] == kind and name in (None, b["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def assert_valid(documents: Iterable[tuple[str, dict[str, Any]]], crds_dir: Path) -> None:
    """Strict validation: upstream CRDs for OCM kinds, Kubernetes' own schemas for core kinds."""
    from fleet.validation import Status, validate_documents

    documents = list(documents)
    report = validate_documents(documents, crds_dir, kubeconform=False)
    problems = [line for r in report.resources if r.status is not Status.VALID for line in r.lines()]
    assert not problems, "\n".join(problems)
    assert len(report.resources) == len(documents)
