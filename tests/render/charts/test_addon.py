"""The addon/ folder: the collaborator add-on (ClusterManagementAddOn, AddOnTemplate, deployment config): its
registration, and an agent that reports it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from chart_helpers import Rendered, assert_valid, in_folder, one

import fleet
from fleet.hub import (
    ADDON_INSTALL_NAMESPACE,
    ADDON_NAME,
    ADDON_SIGNER,
    CLIENT_CERT_SECRET,
    CONTROLLER_NAMESPACE,
    HUB_CA_SECRET,
    collaborator_groups,
)
from fleet.repository import Repository
from render.charts.addon import APP_IMAGE

Example = tuple[Repository, Rendered]
BUILT_IN_VARIABLES = {"CLUSTER_NAME", "INSTALL_NAMESPACE"}
"""What OCM's add-on manager defines for every template without a KubeClient registration."""


def _addon(example: Example) -> Rendered:
    return in_folder(example[1], "addon")


def _agent(template: dict[str, Any]) -> dict[str, Any]:
    manifests = template["spec"]["agentSpec"]["workload"]["manifests"]
    deployments: list[dict[str, Any]] = [m for m in manifests if m["kind"] == "Deployment"]
    assert len(deployments) == 1
    return deployments[0]


def test_folder_holds_the_three_addon_objects(example: Example) -> None:
    objects = _addon(example)
    assert sorted(objects) == [
        "addon/addondeploymentconfig-fleet-collaborator.yaml",
        f"addon/addontemplate-fleet-collaborator-{fleet.__version__}.yaml",
        "addon/clustermanagementaddon-fleet-collaborator.yaml",
    ]
    for body in objects.values():
        assert body["metadata"]["annotations"]["fleet.dev/source"] == "render/charts/addon.py"
        assert body["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fleet"


def test_cluster_management_addon_points_at_the_rendered_configs(example: Example) -> None:
    objects = _addon(example)
    addon = one(objects, "ClusterManagementAddOn", ADDON_NAME)
    template = one(objects, "AddOnTemplate")
    config = one(objects, "AddOnDeploymentConfig")
    defaults = {c["resource"]: (c["group"], c["defaultConfig"]) for c in addon["spec"]["supportedConfigs"]}
    assert defaults == {
        "addontemplates": ("addon.open-cluster-management.io", {"name": template["metadata"]["name"]}),
        "addondeploymentconfigs": (
            "addon.open-cluster-management.io",
            {"name": config["metadata"]["name"], "namespace": config["metadata"]["namespace"]},
        ),
    }
    assert addon["spec"]["installStrategy"] == {"type": "Manual"}
    assert template["spec"]["addonName"] == ADDON_NAME


def test_every_data_holding_cluster_installs_this_addon(example: Example) -> None:
    repository, rendered = example
    installs = {b["metadata"]["namespace"]: b for b in rendered.values() if b["kind"] == "ManagedClusterAddOn"}
    holders = {c.name for c in repository.clusters.values() if c.datasets}
    assert set(installs) == holders
    for install in installs.values():
        assert install["metadata"]["name"] == ADDON_NAME
        assert install["spec"]["installNamespace"] == ADDON_INSTALL_NAMESPACE


def test_registration_gets_each_collaborator_a_certificate_signed_by_the_hub_ca(example: Example) -> None:
    template = one(_addon(example), "AddOnTemplate")
    (registration,) = template["spec"]["registration"]
    assert registration["type"] == "CustomSigner"
    signer = registration["customSigner"]
    assert signer["signerName"] == ADDON_SIGNER
    assert signer["signingCA"] == {"name": HUB_CA_SECRET, "namespace": CONTROLLER_NAMESPACE}
    # A subject in the template would be applied verbatim to every cluster; OCM's default names the cluster.
    assert "subject" not in signer
    assert collaborator_groups("eu-west-hospital")[0] == (
        "system:open-cluster-management:cluster:eu-west-hospital:addon:fleet-collaborator"
    )


def test_agent_reports_the_registration_and_runs_no_federation(example: Example) -> None:
    """One add-on design: the add-on is its registration; SuperNodes are the controller's, per job."""
    agent = _agent(one(_addon(example), "AddOnTemplate"))
    assert agent["spec"]["replicas"] == 1  # the add-on's health prober skips Deployments of 0 replicas
    pod = agent["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "fleet.addon_agent"]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"])
    assert args["cluster"] == "{{CLUSTER_NAME}}"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[args["certificate-dir"]]] == {
        "name": "client-certificate",
        "secret": {"secretName": CLIENT_CERT_SECRET, "optional": True},
    }
    # Ready (and so the add-on Available) only while the registration is usable.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert ports["health"] == int(args["port"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    # Nothing the agent needs lies outside what OCM provides: no SuperLink address, no CA ConfigMap.
    text = json.dumps(one(_addon(example), "AddOnTemplate")["spec"])
    assert "configMap" not in text and "superlink" not in text.lower()


def test_the_registration_secret_is_where_the_klusterlet_writes_it(crds_dir: Path) -> None:
    # The ManagedClusterAddOn CRD's status.registrations: for another signer than kube-apiserver-client 'the
    # secret name will be "{addon name}-{signer name}-client-cert"'; the klusterlet replaces '/' with '-'
    # (ocm pkg/registration/spoke/addon/configuration.go: strings.ReplaceAll(registration.SignerName, "/", "-")).
    text = (
        crds_dir
        / "addon.open-cluster-management.io"
        / "0000_01_addon.open-cluster-management.io_managedclusteraddons.crd.yaml"
    ).read_text(encoding="utf-8")
    assert '"{addon name}-{signer name}-client-cert"' in text
    assert f"{ADDON_NAME}-{ADDON_SIGNER.replace('/', '-')}-client-cert" == CLIENT_CERT_SECRET
    assert CLIENT_CERT_SECRET == "fleet-collaborator-fleet.dev-collaborator-client-cert"


def test_every_template_variable_is_defined_and_every_defined_one_used(example: Example) -> None:
    objects = _addon(example)
    template = one(objects, "AddOnTemplate")
    config = one(objects, "AddOnDeploymentConfig")
    used = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", json.dumps(template["spec"])))
    declared = {v["name"] for v in config["spec"].get("customizedVariables", [])}
    assert used - BUILT_IN_VARIABLES == declared
    assert config["spec"]["agentInstallNamespace"] == ADDON_INSTALL_NAMESPACE


def test_agent_image_follows_the_jobs_client_images(
    example_repo: Path, render_repo: Callable[[Path], tuple[Repository, Rendered]]
) -> None:
    # The example's jobs differ (Flower's app image, OpenFL's): no one image to pick, so the app's.
    repository, rendered = render_repo(example_repo)
    assert len({job.images.client for job in repository.jobs.values()}) == 2
    assert {c["image"] for c in _containers(rendered)} == {APP_IMAGE}

    # Every job on one client image: the agent runs that one.
    for path in (example_repo / "jobs").glob("*.yaml"):
        job = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**job, "images": {**job["images"], "client": "example.org/one:1"}}))
    _, rendered = render_repo(example_repo)
    assert {c["image"] for c in _containers(rendered)} == {"example.org/one:1"}


def _containers(rendered: Rendered) -> list[dict[str, Any]]:
    pod = _agent(one(in_folder(rendered, "addon"), "AddOnTemplate"))["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = pod["containers"]
    return containers


def test_addon_objects_and_the_agent_manifests_are_valid(example: Example, crds_dir: Path) -> None:
    objects = _addon(example)
    manifests = one(objects, "AddOnTemplate")["spec"]["agentSpec"]["workload"]["manifests"]
    assert {m["kind"] for m in manifests} == {"Namespace", "Deployment"}
    assert_valid([*objects.items(), *((f"agent[{i}]", m) for i, m in enumerate(manifests))], crds_dir)
