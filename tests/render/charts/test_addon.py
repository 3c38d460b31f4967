"""The addon/ folder: the collaborator add-on (ClusterManagementAddOn, AddOnTemplate, deployment config)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from chart_helpers import Rendered, assert_valid, in_folder, one
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import fleet
from fleet.hub import (
    ADDON_INSTALL_NAMESPACE,
    ADDON_NAME,
    ADDON_SIGNER,
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


def test_agent_is_a_supernode_using_the_registration_certificate(example: Example) -> None:
    agent = _agent(one(_addon(example), "AddOnTemplate"))
    pod = agent["spec"]["template"]["spec"]
    volumes: dict[str, dict[str, Any]] = {v["name"]: v for v in pod["volumes"]}
    (supernode,) = pod["containers"]
    assert supernode["command"] == ["flower-supernode"]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in supernode["args"])
    assert args["superlink"] == "{{SUPERLINK_ADDRESS}}"
    mounts = {m["mountPath"]: m["name"] for c in [*pod["initContainers"], supernode] for m in c["volumeMounts"]}

    def volume_of(path: str) -> dict[str, Any]:
        folder = path.rpartition("/")[0]
        return volumes[mounts[folder]]

    # The CA bundle verifies the SuperLink; the key the hub certified authenticates the SuperNode.
    assert volume_of(args["root-certificates"]) == {"name": "ca", "configMap": {"name": HUB_CA_SECRET}}
    assert volume_of(args["auth-supernode-private-key"])["emptyDir"]["medium"] == "Memory"
    (init,) = pod["initContainers"]
    pem_key = init["command"][-2]
    assert init["command"][-1] == args["auth-supernode-private-key"]
    assert volume_of(pem_key) == {
        "name": "client-certificate",
        "secret": {"secretName": f"{ADDON_NAME}-fleet.dev-collaborator-client-cert"},
    }
    assert pem_key.endswith("/tls.key")
    assert "{{CLUSTER_NAME}}" in args["node-config"]
    for container in [init, supernode]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {m["name"] for m in container["volumeMounts"]} <= set(volumes)
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_auth_key_step_turns_the_registration_key_into_one_flower_accepts(tmp_path: Path, example: Example) -> None:
    # flower-supernode reads --auth-supernode-private-key with cryptography's load_ssh_private_key.

    init = _agent(one(_addon(example), "AddOnTemplate"))["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"][:2] == ["python", "-c"]
    key = ec.generate_private_key(ec.SECP256R1())  # the klusterlet's CSR key: ECDSA P-256, PEM
    pem = tmp_path / "tls.key"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    out = tmp_path / "supernode.key"
    subprocess.run([sys.executable, "-c", init["command"][2], str(pem), str(out)], check=True, timeout=60)
    loaded = serialization.load_ssh_private_key(out.read_bytes(), None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    assert loaded.public_key().public_bytes(serialization.Encoding.PEM, public) == key.public_key().public_bytes(
        serialization.Encoding.PEM, public
    )


def test_every_template_variable_is_defined(example: Example) -> None:
    objects = _addon(example)
    template = one(objects, "AddOnTemplate")
    config = one(objects, "AddOnDeploymentConfig")
    used = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", json.dumps(template["spec"])))
    declared = {v["name"] for v in config["spec"]["customizedVariables"]}
    assert {"SUPERLINK_ADDRESS", "DATA_ROOT"} <= declared
    assert used - BUILT_IN_VARIABLES <= declared
    assert all(v.get("value") for v in config["spec"]["customizedVariables"])
    assert config["spec"]["agentInstallNamespace"] == ADDON_INSTALL_NAMESPACE


def test_agent_image_follows_the_jobs_client_images(
    example_repo: Path, render_repo: Callable[[Path], tuple[Repository, Rendered]]
) -> None:
    _, rendered = render_repo(example_repo)
    images = {c["image"] for c in _containers(rendered)}
    assert images == {"ghcr.io/fleet-fl/fleet-app:0.1.0"}  # the example job's client image

    job = yaml.safe_load((example_repo / "jobs" / "mnist-digits.yaml").read_text())
    other = {**job, "name": "mnist-digits-b", "images": {**job["images"], "client": "example.org/other:1"}}
    other["listeners"] = [{**job["listeners"][0], "port": 30094}]  # a NodePort of its own
    (example_repo / "jobs" / "mnist-digits-b.yaml").write_text(yaml.safe_dump(other))
    _, rendered = render_repo(example_repo)
    assert {c["image"] for c in _containers(rendered)} == {APP_IMAGE}  # no one image to pick: the app's


def _containers(rendered: Rendered) -> list[dict[str, Any]]:
    pod = _agent(one(in_folder(rendered, "addon"), "AddOnTemplate"))["spec"]["template"]["spec"]
    return [*pod["initContainers"], *pod["containers"]]


def test_addon_objects_and_the_agent_manifests_are_valid(example: Example, crds_dir: Path) -> None:
    objects = _addon(example)
    manifests = one(objects, "AddOnTemplate")["spec"]["agentSpec"]["workload"]["manifests"]
    assert {m["kind"] for m in manifests} == {"Namespace", "Deployment"}
    assert_valid([*objects.items(), *((f"agent[{i}]", m) for i, m in enumerate(manifests))], crds_dir)
