"""Run submission helpers: the run config the ServerApp reads."""

from __future__ import annotations

import tomllib

from fleet.controller.runs import run_config
from fleet.models import FederatedLearningSpec

from .conftest import ROOT, job


def test_the_run_config_has_exactly_the_app_s_keys() -> None:
    manifest = tomllib.loads((ROOT / "fleet" / "app" / "pyproject.toml").read_text(encoding="utf-8"))
    spec = FederatedLearningSpec.from_job(job(), {})
    config = run_config(spec, "/models/digits")
    assert set(config) == set(manifest["tool"]["flwr"]["app"]["config"])
    assert config["num-rounds"] == 3 and config["model-dir"] == "/models/digits"
