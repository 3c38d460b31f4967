"""The Dockerfiles, read as text (no container engine here): pinned bases, non-root, built from this package."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = _instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_every_image_exists() -> None:
    assert [p.name for p in DOCKERFILES] == ["app.Dockerfile", "controller.Dockerfile", "openfl.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_to_a_patch_release(dockerfile: Path) -> None:
    for keyword, argument in _instructions(dockerfile):
        if keyword == "FROM":
            image = argument.split()[0]
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image), image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_final_stage_runs_as_the_non_root_user_of_the_rendered_pods(dockerfile: Path) -> None:
    users = [argument for keyword, argument in _final_stage(dockerfile) if keyword == "USER"]
    assert users == ["65532:65532"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_is_built_from_this_package(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    copies = [
        argument.split()[0] for keyword, argument in instructions if keyword == "COPY" and "--from" not in argument
    ]
    for source in copies:
        assert (ROOT / source).exists(), source
    assert any("pip wheel" in argument and argument.rstrip().endswith(" .") for _, argument in instructions)


def test_the_app_image_installs_the_cpu_torch_wheel_before_the_package() -> None:
    runs = [argument for keyword, argument in _final_stage(ROOT / "docker" / "app.Dockerfile") if keyword == "RUN"]
    torch = next(i for i, run in enumerate(runs) if "torch==2.13.0" in run)
    package = next(i for i, run in enumerate(runs) if "/wheels/*.whl" in run)
    assert torch < package
    assert "download.pytorch.org/whl/cpu" in runs[torch]


def test_the_controller_image_requirements_are_the_projects_own() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runs = " ".join(a for k, a in _final_stage(ROOT / "docker" / "controller.Dockerfile") if k == "RUN")
    wanted = re.findall(r'"([A-Za-z0-9_.-]+[=<>!~][^"]*)"', runs)
    assert wanted, "no requirements found"
    # Each is one of the project's own, same name and versions; the image may leave out extras the controller does
    # not use (flwr's [dp] accountant runs in the aggregator, not in the controller).
    own = {r.name: r for r in map(Requirement, project["dependencies"])}
    for requirement in map(Requirement, wanted):
        assert requirement.name in own, requirement
        assert requirement.specifier == own[requirement.name].specifier, requirement
        assert requirement.extras <= own[requirement.name].extras, requirement
    assert "torch" not in runs
    cmd = [a for k, a in _final_stage(ROOT / "docker" / "controller.Dockerfile") if k == "CMD"]
    assert cmd == ['["fleet", "controller"]'] and "fleet" in project["scripts"]


def test_every_module_the_rendered_pods_run_is_in_the_package_the_app_image_installs() -> None:
    """The hub's pods and the add-on's agent run ``python -m <module>`` in the app image, which installs this
    package: each such module must be one of its modules (the launcher, the executor, the sidecar, the agent)."""
    import importlib.util

    from fleet.controller.objects import JobRef, TlsMaterial, collaborator_work, federation_objects
    from fleet.models import FederatedLearningSpec
    from render.charts.addon import _agent
    from tests.fleet.controller.conftest import job

    spec = FederatedLearningSpec.from_job(job(), {})
    ref = JobRef("digits", "fl-digits", "uid")
    tls = TlsMaterial("ca", "crt", "key", "sa-crt", "sa-key")
    pods = [
        o["spec"]["template"]["spec"]
        for o in federation_objects(spec, ref, tls, replicas=1)
        if o["kind"] == "Deployment"
    ]
    work = collaborator_work(spec, ref, "a", "/data/a", "hub:1", "ca", "0" * 64)
    pods.append(work["spec"]["workload"]["manifests"][1]["spec"]["template"]["spec"])
    pods.append(_agent("image")["spec"]["template"]["spec"])
    modules = {
        c["command"][2]
        for pod in pods
        for c in [*pod["containers"], *pod.get("initContainers", [])]
        if c["command"][:2] == ["python", "-m"]
    }
    assert modules == {
        "fleet.federation.flower_launcher",
        "fleet.federation.executor",
        "fleet.controller.progress",
        "fleet.addon_agent",
    }
    for module in modules:
        found = importlib.util.find_spec(module)
        assert found is not None and found.origin is not None
        assert Path(found.origin).resolve().is_relative_to(ROOT / "fleet"), module


def test_the_openfl_image_installs_exactly_openfl_s_lock_then_the_package_without_its_dependencies() -> None:
    runs = [argument for keyword, argument in _final_stage(ROOT / "docker" / "openfl.Dockerfile") if keyword == "RUN"]
    lock = next(i for i, run in enumerate(runs) if "openfl.txt" in run)
    package = next(i for i, run in enumerate(runs) if "/wheels/*.whl" in run)
    assert lock < package
    assert "--require-hashes" in runs[lock] and "--no-deps" in runs[lock]
    assert "--no-deps" in runs[package]  # fleet's own dependencies (Flower) cannot be in OpenFL's environment
    ignored = (ROOT / "docker" / "openfl.Dockerfile.dockerignore").read_text(encoding="utf-8")
    assert "!requirements/openfl.txt" in ignored.splitlines()


def test_every_module_an_openfl_job_s_pods_run_is_in_the_package_and_imports_in_openfl_s_environment() -> None:
    """An OpenFL job's pods run fleet's OpenFL launcher in the OpenFL image and the progress sidecar in the app
    image; the launcher must import with only what the OpenFL image holds (OpenFL's lock and fleet's sources)."""
    import importlib.util
    import subprocess

    from fleet.controller.objects import JobRef, TlsMaterial, collaborator_work, federation_objects
    from fleet.federation import openfl_runtime
    from fleet.models import FederatedLearningSpec, Framework
    from fleet.runtimes.openfl import PROGRESS_IMAGE
    from render.charts.addon import APP_IMAGE
    from tests.fleet.controller.conftest import job

    spec = FederatedLearningSpec.from_job(job(framework=Framework.OPENFL), {})
    ref = JobRef("digits", "fl-digits", "uid", "aggregator")
    tls = TlsMaterial("ca", "crt", "key", "sa-crt", "sa-key")
    pods = [
        o["spec"]["template"]["spec"]
        for o in federation_objects(spec, ref, tls, replicas=1)
        if o["kind"] == "Deployment"
    ]
    work = collaborator_work(spec, ref, "a", "/data/a", "hub:30093", "ca", "0" * 64)
    pods += [m["spec"]["template"]["spec"] for m in work["spec"]["workload"]["manifests"] if m["kind"] == "Deployment"]
    containers = [c for pod in pods for c in [*pod["containers"], *pod.get("initContainers", [])]]
    by_image = {(c["image"], c["command"][2]) for c in containers if c["command"][:2] == ["python", "-m"]}
    assert by_image == {
        (spec.server.image, "fleet.app_openfl.launcher"),
        (spec.client.image, "fleet.app_openfl.launcher"),
        (PROGRESS_IMAGE, "fleet.controller.progress"),
    }
    assert PROGRESS_IMAGE == APP_IMAGE
    for _, module in by_image:
        found = importlib.util.find_spec(module)
        assert found is not None and found.origin is not None
        assert Path(found.origin).resolve().is_relative_to(ROOT / "fleet"), module
    python = openfl_runtime.DEFAULT_OPENFL_VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"OpenFL's environment is missing ({python}): `make openfl-env` makes it")
    result = subprocess.run(
        [str(python), "-c", "import fleet.app_openfl.launcher as l; l.patch(); import fleet.app_openfl.aggregator"],
        cwd="/",
        env={"PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
