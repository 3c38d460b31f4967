"""The runtime boundary (`fleet.runtimes`): every framework a job may name has a runtime behind the one interface,
and the shared modules name none of them, so a third runtime is a new module, not edits across the tree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fleet.controller.runs import KeyRegistry
from fleet.federation.local import LocalRun
from fleet.models import Framework
from fleet.runtimes import DEFAULT_FRAMEWORK, framework_of, runtime_for

ROOT = Path(__file__).resolve().parents[2]
SHARED = [
    "fleet/controller/reconcile.py",
    "fleet/controller/operator.py",
    "fleet/lifecycle.py",
    "fleet/federation/local.py",
    "fleet/plan.py",
]
"""What every runtime goes through: the reconcile, the operator, the phase machine, the local run, the plan."""
RUNTIME_MODULES = ("fleet.runtimes.flower", "fleet.runtimes.openfl", "fleet.federation.flower_runtime",
                   "fleet.federation.openfl_runtime", "fleet.app_openfl", "fleet.app.server_app")  # fmt: skip


@pytest.mark.parametrize("framework", list(Framework))
def test_every_framework_has_a_runtime_behind_the_interface(framework: Framework) -> None:
    runtime = runtime_for(framework)
    assert runtime.framework is framework
    assert issubclass(runtime.local_run(), LocalRun)
    backend = runtime.run_backend()
    assert all(callable(getattr(backend, name, None)) for name in ("submit", "failure", "stop"))
    # A runtime whose collaborators' keys the controller registers has a backend that registers them.
    assert isinstance(backend, KeyRegistry) or not runtime.registers_keys


def test_each_runtime_names_its_hub_objects_apart() -> None:
    names = [runtime_for(f).aggregator for f in Framework]
    assert len(set(names)) == len(names)


def test_a_resource_s_framework_is_read_with_the_job_s_default() -> None:
    assert framework_of({"spec": {"framework": "openfl"}}) is Framework.OPENFL
    assert framework_of({"spec": {}}) is DEFAULT_FRAMEWORK is Framework.FLOWER
    assert framework_of({}) is DEFAULT_FRAMEWORK


@pytest.mark.parametrize("module", SHARED)
def test_a_shared_module_names_no_runtime(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Framework":
            raise AssertionError(
                f"{module}:{node.lineno}: Framework.{node.attr}: a runtime's choice in a shared module"
            )
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not node.module.startswith(RUNTIME_MODULES), f"{module}:{node.lineno}: imports {node.module}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith(RUNTIME_MODULES), f"{module}:{node.lineno}: imports {alias.name}"
