"""Synthesis: one object per file and one file per object, or an error naming both files."""

from __future__ import annotations

from pathlib import Path

import pytest

import render
from fleet.repository import load_repository
from render.charts.base import FleetApp, FolderChart
from render.constructs.namespace import Namespace
from render.constructs.service_account import ServiceAccount

ROOT = Path(__file__).resolve().parents[2]


def test_one_object_in_two_folders_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def twice(app: FleetApp, _repository: object) -> None:
        for folder in ("controller", "namespaces/fleet-system"):
            Namespace(FolderChart(app, folder), name="fleet-system", component="test", source="test")

    monkeypatch.setitem(render.TARGETS, "twice", twice)
    with pytest.raises(ValueError, match=r"one object is rendered twice: .*controller/namespace-fleet-system\.yaml"):
        render.synth(load_repository(ROOT), "twice")


def test_two_objects_in_one_file_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def clash(app: FleetApp, _repository: object) -> None:
        chart = FolderChart(app, "a")
        for namespace in ("one", "two"):  # the file name leaves the namespace out
            ServiceAccount(chart, name="x", namespace=namespace, component="test", source="test")

    monkeypatch.setitem(render.TARGETS, "clash", clash)
    with pytest.raises(ValueError, match=r"two rendered objects share the output file a/serviceaccount-x\.yaml"):
        render.synth(load_repository(ROOT), "clash")
