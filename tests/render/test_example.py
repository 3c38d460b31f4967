"""The bundled example, rendered: committed output fresh, deterministic, valid, traceable to its sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fleet.cli import main
from fleet.repository import load_repository
from fleet.validation import Status, validate_documents
from render.output import read_tree

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("render") / "manifests"
    result = CliRunner().invoke(main, ["render", "--repo", str(ROOT), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return read_tree(out)


def test_committed_output_is_fresh(rendered: dict[str, str]) -> None:
    assert read_tree(ROOT / "manifests") == rendered, "run `fleet render` and commit manifests/"


def test_check_mode_passes_on_the_committed_output() -> None:
    result = CliRunner().invoke(main, ["render", "--repo", str(ROOT), "--check"])
    assert result.exit_code == 0, result.output


def test_check_mode_fails_on_a_stale_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for folder in ("jobs", "clusters", "policies", "manifests"):
        shutil.copytree(ROOT / folder, repo / folder)
    job = repo / "jobs" / "mnist-digits.yaml"
    job.write_text(job.read_text().replace("rounds: 5", "rounds: 7"))
    stray = repo / "manifests" / "hub" / "stray.yaml"
    stray.write_text("kind: Stray\n")
    result = CliRunner().invoke(main, ["render", "--repo", str(repo), "--check", "--crds", str(ROOT / "missing")])
    assert result.exit_code == 1
    assert "hub/jobs/mnist-digits/federatedlearning-mnist-digits.yaml" in result.output
    assert "hub/stray.yaml" in result.output
    assert stray.exists()  # --check writes nothing


def test_render_is_byte_identical_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    trees = []
    for seed in ("1", "2"):
        out = tmp_path / f"out-{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        command = [sys.executable, "-m", "fleet", "render", "--repo", str(ROOT), "--out", str(out)]
        subprocess.run(command, check=True, env=env, capture_output=True, cwd=tmp_path)
        trees.append(read_tree(out))
    assert trees[0] == trees[1]
    assert trees[0]


def test_stale_files_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    (out / "hub" / "jobs" / "gone").mkdir(parents=True)
    (out / "hub" / "jobs" / "gone" / "placement-gone.yaml").write_text("stale\n")
    result = CliRunner().invoke(main, ["render", "--repo", str(ROOT), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "hub" / "jobs" / "gone").exists()


def test_every_rendered_manifest_is_valid_against_upstream_crds(rendered: dict[str, str], crds_dir: Path) -> None:
    documents = [(path, yaml.safe_load(text)) for path, text in rendered.items()]
    report = validate_documents(documents, crds_dir)
    assert report.ok, "\n".join(report.lines())
    # prometheus-operator's CRDs are not among the upstream CRDs: its ServiceMonitors alone go unvalidated here
    # (kubeconform validates them in the pull-request workflow, against the CRDs catalog's schema).
    skipped = {(r.api_version, r.kind) for r in report.resources if r.status is Status.SKIPPED}
    assert skipped <= {("monitoring.coreos.com/v1", "ServiceMonitor")}, "\n".join(report.lines())
    # ManifestWork payloads are free-form to the ManifestWork CRD: validate the ClusterClaims they carry too.
    payloads = [
        (path, manifest)
        for path, body in documents
        if body["kind"] == "ManifestWork"
        for manifest in body["spec"]["workload"]["manifests"]
    ]
    assert payloads
    payload_report = validate_documents(payloads, crds_dir)
    assert payload_report.ok, "\n".join(payload_report.lines())


def test_objects_carry_labels_and_a_source_that_exists(rendered: dict[str, str]) -> None:
    for path, text in rendered.items():
        metadata = yaml.safe_load(text)["metadata"]
        labels = metadata["labels"]
        for key in ("name", "instance", "component", "part-of", "managed-by"):
            assert labels.get(f"app.kubernetes.io/{key}"), f"{path}: no app.kubernetes.io/{key} label"
        for source in metadata["annotations"]["fleet.dev/source"].split(","):
            assert (ROOT / source).exists(), f"{path}: source {source} does not exist"


def test_one_file_per_resource_named_after_it(rendered: dict[str, str]) -> None:
    for path, text in rendered.items():
        body = yaml.safe_load(text)
        assert Path(path).name == f"{body['kind'].lower()}-{body['metadata']['name']}.yaml"
        assert path.split("/")[0] in ("hub", "upstream", "gitops", "observability")


def test_job_objects(rendered: dict[str, str]) -> None:
    repository = load_repository(ROOT)
    job = repository.jobs["mnist-digits"]
    fl = yaml.safe_load(rendered["hub/jobs/mnist-digits/federatedlearning-mnist-digits.yaml"])
    assert fl["apiVersion"] == "federation.fleet.dev/v1alpha1"
    assert fl["spec"]["server"]["rounds"] == job.rounds == 5
    assert fl["spec"]["server"]["minAvailableClients"] == 2
    assert fl["spec"]["server"]["storage"] == {
        "type": "PersistentVolumeClaim",
        "name": "mnist-digits-model",
        "size": "1Gi",
        "path": "/models/mnist-digits",
    }
    placement = yaml.safe_load(rendered["hub/jobs/mnist-digits/placement-mnist-digits.yaml"])
    assert fl["spec"]["client"]["placement"] == placement["spec"]
    assert placement["metadata"]["annotations"]["fleet.dev/policies"] == "digits-residency"
    # exactly the cluster sets the job uses are bound in its namespace, and no other
    bindings = sorted(p for p in rendered if p.startswith("hub/namespaces/fl-mnist-digits/managedclustersetbinding"))
    assert [Path(p).stem.removeprefix("managedclustersetbinding-") for p in bindings] == sorted(job.cluster_sets)
    upstream = yaml.safe_load(rendered["upstream/jobs/mnist-digits/federatedlearning-mnist-digits.yaml"])
    assert upstream["apiVersion"] == "federation-ai.open-cluster-management.io/v1alpha1"
    # the upstream CRD's Placement has no celSelector: the capacity filter is dropped there, and says so
    selector = dict(placement["spec"]["predicates"][0]["requiredClusterSelector"])
    assert selector.pop("celSelector")
    assert upstream["spec"]["client"]["placement"] == {
        **placement["spec"],
        "predicates": [{"requiredClusterSelector": selector}],
    }
    assert upstream["metadata"]["annotations"]["fleet.dev/dropped-placement-fields"] == (
        "predicates[0].requiredClusterSelector.celSelector"
    )


def test_cluster_claims(rendered: dict[str, str]) -> None:
    work = yaml.safe_load(rendered["hub/clusters/eu-central-lab/manifestwork-fleet-cluster-claims.yaml"])
    manifests = work["spec"]["workload"]["manifests"]
    # Delivered first: the role that lets the work agent apply ClusterClaims (tests/fleet/controller/
    # test_upstream_rules.py checks it against the klusterlet's own roles).
    assert manifests[0]["kind"] == "ClusterRole"
    assert manifests[0]["metadata"]["labels"]["open-cluster-management.io/aggregate-to-work"] == "true"
    claims = {m["metadata"]["name"]: m["spec"]["value"] for m in manifests if m["kind"] == "ClusterClaim"}
    assert len(claims) == len(manifests) - 1
    assert claims == {
        "digits.dataset.fleet.dev": "/data/digits/eu-central-lab",
        "cpu.capacity.fleet.dev": "16000",
        "memory.capacity.fleet.dev": str(64 * 2**30),
        "gpu.capacity.fleet.dev": "1",
    }
    # the edge cluster holds no data: claims yes (capacity), collaborator add-on no
    assert "hub/clusters/us-west-edge/manifestwork-fleet-cluster-claims.yaml" in rendered
    assert "hub/clusters/us-west-edge/managedclusteraddon-fleet-collaborator.yaml" not in rendered


def test_fleet_validate_names_resource_and_field_of_a_wrong_field(
    rendered: dict[str, str], tmp_path: Path, crds_dir: Path
) -> None:
    placement = yaml.safe_load(rendered["hub/jobs/mnist-digits/placement-mnist-digits.yaml"])
    placement["spec"]["predicates"][0]["requiredClusterSelector"]["claimSelectors"] = {}
    path = tmp_path / "placement.yaml"
    path.write_text(yaml.safe_dump(placement))
    result = CliRunner().invoke(main, ["validate", str(path), "--crds", str(crds_dir)])
    assert result.exit_code == 1
    assert "Placement fl-mnist-digits/mnist-digits" in result.output
    assert "spec.predicates[0].requiredClusterSelector" in result.output
    assert "claimSelectors" in result.output
