"""The upstream target renders the example's framework: openfl job (jobs/mnist-digits-openfl.yaml) for the upstream
OCM controller, valid against its CRD."""

from __future__ import annotations

from pathlib import Path

import render
from fleet.repository import load_repository
from fleet.validation import Status, validate_documents


def test_the_openfl_example_renders_for_the_upstream_controller_as_openfl(example_repo: Path, crds_dir: Path) -> None:
    rendered = render.synth(load_repository(example_repo), "upstream")
    [job] = [
        m.body
        for m in rendered
        if m.body["kind"] == "FederatedLearning" and m.body["metadata"]["name"] == "mnist-digits-openfl"
    ]
    assert job["apiVersion"] == "federation-ai.open-cluster-management.io/v1alpha1"
    assert job["spec"]["framework"] == "openfl"  # type: ignore[index]
    report = validate_documents([("federatedlearning.yaml", job)], crds_dir, kubeconform=False)
    assert report.ok and [r.status for r in report.resources] == [Status.VALID], "\n".join(report.lines())
