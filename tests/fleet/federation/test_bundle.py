"""The Flower app bundle carries fleet.app alone, whoever submits the run (fleet run or the controller)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.federation.bundle import AppError, stage_app


def test_the_bundle_is_the_app_package_and_its_manifest(tmp_path: Path) -> None:
    staged = stage_app(tmp_path / "app")
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert "pyproject.toml" in files
    assert "fleet/__init__.py" in files
    assert {"fleet/app/server_app.py", "fleet/app/client_app.py", "fleet/app/task.py", "fleet/app/data.py"} <= set(
        files
    )
    assert all(f in ("pyproject.toml", "fleet/__init__.py") or f.startswith("fleet/app/") for f in files), files
    assert not any("__pycache__" in f for f in files)


def test_another_app_is_staged_as_it_is(tmp_path: Path) -> None:
    app = tmp_path / "mine"
    (app / "pkg").mkdir(parents=True)
    (app / "pkg" / "server.py").write_text("x = 1\n")
    (app / "pyproject.toml").write_text(
        "[project]\nname = 'mine'\n[tool.flwr.app.components]\nserverapp = 'pkg.server:app'\n"
        "clientapp = 'pkg.client:app'\n"
    )
    staged = stage_app(tmp_path / "out", app)
    assert (staged / "pkg" / "server.py").read_text() == "x = 1\n"
    assert (staged / "pyproject.toml").is_file()


def test_an_app_without_its_components_is_refused_before_anything_is_staged(tmp_path: Path) -> None:
    app = tmp_path / "mine"
    app.mkdir()
    (app / "pyproject.toml").write_text("[tool.flwr.app.components]\nserverapp = 'pkg.server:app'\n")
    with pytest.raises(AppError, match=r"mine/pyproject\.toml: tool\.flwr\.app\.components\.clientapp: expected"):
        stage_app(tmp_path / "out", app)
    assert not (tmp_path / "out").exists()
