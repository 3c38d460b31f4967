"""``fleet validate``: output, exit codes (0 valid, 1 invalid or errored, 2 bad input) and the CRD folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleet.cli import main
from tests.conftest import ROOT

PLACEMENT = """\
apiVersion: cluster.open-cluster-management.io/v1beta1
kind: Placement
metadata:
  name: mnist-digits
  namespace: fl-mnist-digits
spec:
  numberOfClusters: 2
  predicates:
    - requiredClusterSelector:
        labelSelector:
          matchLabels: {region: eu-west}
"""

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: fl-mnist-digits
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["validate", *args])
    return result.exit_code, result.stdout, result.stderr


def test_valid_manifests_exit_0_with_a_summary(tmp_path: Path, crds_dir: Path) -> None:
    write(tmp_path, "m/placement.yaml", PLACEMENT)
    write(tmp_path, "m/ns/namespace.yaml", NAMESPACE)
    code, out, _ = run(str(tmp_path / "m"), "--crds", str(crds_dir))
    assert code == 0, out
    assert out.splitlines()[-1] == (
        "Summary: 2 resources found in 2 files - Valid: 2, Invalid: 0, Errors: 0, Skipped: 0"
    )


def test_invalid_manifest_exits_1_naming_file_resource_and_path(tmp_path: Path, crds_dir: Path) -> None:
    bad = PLACEMENT.replace("matchLabels:", "matchLabel:")
    path = write(tmp_path, "m/placement.yaml", bad + "---\n" + NAMESPACE)
    code, out, _ = run(str(path), "--crds", str(crds_dir))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(
        f"{path.as_posix()}: Placement fl-mnist-digits/mnist-digits: "
        "spec.predicates[0].requiredClusterSelector.labelSelector.matchLabel: "
        "unknown field (expected one of: "
    )
    assert lines[-1] == "Summary: 2 resources found in 1 file - Valid: 1, Invalid: 1, Errors: 0, Skipped: 0"


def test_unserved_api_version_exits_1(tmp_path: Path, crds_dir: Path) -> None:
    write(tmp_path, "p.yaml", PLACEMENT.replace("/v1beta1", "/v1"))
    code, out, _ = run(str(tmp_path / "p.yaml"), "--crds", str(crds_dir))
    assert code == 1
    assert "Placement fl-mnist-digits/mnist-digits: apiVersion cluster.open-cluster-management.io/v1:" in out
    assert "Errors: 1" in out


def test_a_kind_with_no_schema_fails_unless_missing_schemas_are_ignored(tmp_path: Path, crds_dir: Path) -> None:
    write(tmp_path, "t.yaml", "apiVersion: example.com/v1\nkind: Thing\nmetadata: {name: t}\n")
    code, out, err = run(str(tmp_path / "t.yaml"), "--crds", str(crds_dir))
    assert code == 1
    assert f"{(tmp_path / 't.yaml').as_posix()}: Thing t: skipped: no schema for Thing example.com/v1" in out
    assert "Skipped: 1" in out
    assert "a kind with no schema was not validated" in err
    code, out, _ = run(str(tmp_path / "t.yaml"), "--crds", str(crds_dir), "--ignore-missing-schemas")
    assert code == 0
    assert "Skipped: 1" in out


def _federated_learning() -> str:
    folder = ROOT / "manifests" / "hub" / "jobs" / "mnist-digits"
    return next(p for p in sorted(folder.iterdir()) if p.name.startswith("federatedlearning-")).read_text()


def test_the_projects_own_kind_is_validated_outside_manifests_too(tmp_path: Path, crds_dir: Path) -> None:
    """Without its CRD beside it: the project's kinds get the project's CRD wherever they are."""
    write(tmp_path, "fl.yaml", _federated_learning())
    code, out, _ = run(str(tmp_path / "fl.yaml"), "--crds", str(crds_dir))
    assert code == 0, out
    assert "Valid: 1" in out


def test_an_unknown_field_in_the_projects_own_kind_fails_outside_manifests(tmp_path: Path, crds_dir: Path) -> None:
    text = _federated_learning().replace("spec:\n", "spec:\n  maxClientz: 3\n", 1)
    write(tmp_path, "fl.yaml", text)
    code, out, _ = run(str(tmp_path / "fl.yaml"), "--crds", str(crds_dir))
    assert code == 1, out
    assert "maxClientz" in out


def test_default_path_is_manifests_under_the_current_directory(
    tmp_path: Path, crds_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "manifests/hub/placement.yaml", PLACEMENT)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("--crds", str(crds_dir))
    assert code == 0, out
    assert "Summary: 1 resource found in 1 file" in out


def test_json_output(tmp_path: Path, crds_dir: Path) -> None:
    write(tmp_path, "p.yaml", PLACEMENT.replace("numberOfClusters: 2", "numberOfClusters: two"))
    code, out, _ = run(str(tmp_path / "p.yaml"), "--crds", str(crds_dir), "--output", "json")
    assert code == 1
    report = json.loads(out)
    assert report["summary"]["invalid"] == 1
    [resource] = report["resources"]
    assert resource["status"] == "invalid"
    assert resource["errors"] == [{"path": "spec.numberOfClusters", "message": 'expected integer, found string "two"'}]


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({}, ["missing"], "missing: no such file or folder"),
        ({"bad.yaml": "kind: [\n"}, ["bad.yaml"], "bad.yaml:2: expected valid YAML"),
        (  # what libyaml (PyYAML 6.0.4) refuses and the pure-Python composer crashes on
            {"deep.yaml": "kind: ConfigMap\ndata: " + "[" * 1001 + "]" * 1001 + "\n"},
            ["deep.yaml"],
            "deep.yaml:2: expected YAML nested at most 100 levels",
        ),
        (
            {"p.yaml": PLACEMENT},
            ["p.yaml", "--crds", "nowhere"],
            "nowhere does not exist; point --crds or the FLEET_CRDS_DIR",
        ),
    ],
    ids=["missing-path", "unparsable", "nested-too-deep", "no-crds"],
)
def test_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], args: list[str], message: str
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(*args)
    assert code == 2
    assert message in err and out == ""


def test_crd_folder_from_the_environment(tmp_path: Path, crds_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "p.yaml", PLACEMENT)
    monkeypatch.setenv("FLEET_CRDS_DIR", str(crds_dir))
    code, out, _ = run(str(tmp_path / "p.yaml"))
    assert code == 0, out
    monkeypatch.setenv("FLEET_CRDS_DIR", str(tmp_path / "elsewhere"))
    code, _, err = run(str(tmp_path / "p.yaml"))
    assert code == 2 and f"{tmp_path / 'elsewhere'} does not exist" in err


def test_core_kinds_need_no_crd_folder(tmp_path: Path) -> None:
    write(tmp_path, "ns.yaml", NAMESPACE)
    code, out, _ = run(str(tmp_path / "ns.yaml"), "--crds", str(tmp_path / "nowhere"))
    assert code == 0, out
