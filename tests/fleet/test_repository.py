"""The loader on bad input: each case is the bundled example with one edit, and the exact problem it gives.

Each expected problem names the file, the line (found as the line of the edited file holding a marker text,
so the cases survive edits to the example), the field path and key phrases of the message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet.errors import InvalidRepository, Problem
from fleet.repository import load_repository
from tests.fleet.deadline import deadline

JOB = "jobs/mnist-digits.yaml"
OPENFL_JOB = "jobs/mnist-digits-openfl.yaml"
"""The example's second job, the same training on OpenFL: an edit of a policy or a cluster reaches it too."""
EXAMPLE_JOBS = ["mnist-digits", "mnist-digits-openfl"]
_DP_RULE = "  requireDifferentialPrivacy:\n    maxEpsilon: 3\n"
_DP = "differentialPrivacy:\n    noiseMultiplier: 1.0\n    clippingNorm: 1.0\n"


def _privacy(block: str) -> str:
    """A job's privacy section holding ``block`` (its first line unindented, the rest indented by four)."""
    return "privacy:\n  " + block


CLUSTER = "clusters/eu-west-hospital.yaml"
POLICY = "policies/digits-residency.yaml"

DNS_LABEL = "expected a DNS-1123 label"

SECRET = "SECRET_hunter2_token"
"""A value outside the repository: a problem would echo it (a name must be a DNS label) if its file were read."""


@dataclass(frozen=True)
class Expected:
    file: str
    marker: str | None
    """Text on the line the problem must name (its first occurrence in the edited file); None: no line."""
    field: str
    phrases: tuple[str, ...]
    """Each must appear in the message."""


def _in_both_jobs(expected: Expected) -> tuple[Expected, Expected]:
    """``expected`` (a problem of the Flower job) and the same problem of the OpenFL job: a policy governs every job
    on its dataset, and the loader reports each job that breaks it."""
    return expected, Expected(OPENFL_JOB, expected.marker, expected.field, expected.phrases)


_OPENFL_JOB_WITHOUT_DP = Expected(
    OPENFL_JOB,
    "name: mnist-digits-openfl",
    "privacy.differentialPrivacy",
    ("expected differential privacy", "at most 3", "'digits-residency'"),
)
"""What a policy requiring differential privacy makes of the OpenFL job, which has none (nor may have: its runtime
has no DP), while a case edits the Flower job's."""

Edit = Callable[[Path], None]


def replace(file: str, old: str, new: str) -> Edit:
    def edit(repo: Path) -> None:
        path = repo / file
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{old!r} must occur exactly once in {file}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    return edit


def write(file: str, text: str) -> Edit:
    def edit(repo: Path) -> None:
        (repo / file).write_text(text, encoding="utf-8")

    return edit


def write_bytes(file: str, data: bytes) -> Edit:
    def edit(repo: Path) -> None:
        (repo / file).write_bytes(data)

    return edit


def append(file: str, text: str) -> Edit:
    def edit(repo: Path) -> None:
        path = repo / file
        path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")

    return edit


def copy(source: str, target: str) -> Edit:
    def edit(repo: Path) -> None:
        shutil.copyfile(repo / source, repo / target)

    return edit


def rename(source: str, target: str) -> Edit:
    def edit(repo: Path) -> None:
        (repo / source).rename(repo / target)

    return edit


def outside(file: str, text: str) -> Edit:
    """Write ``file`` beside the repository (``../outside/file``), not in it."""

    def edit(repo: Path) -> None:
        path = repo.parent / "outside" / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    return edit


def symlink(file: str, target: str) -> Edit:
    """Make ``file`` a symbolic link to ``target``, relative to the link's folder as links are."""

    def edit(repo: Path) -> None:
        (repo / file).symlink_to(target)

    return edit


def mkdir(folder: str) -> Edit:
    def edit(repo: Path) -> None:
        (repo / folder).mkdir()

    return edit


def mkfifo(file: str) -> Edit:
    def edit(repo: Path) -> None:
        os.mkfifo(repo / file)

    return edit


def move_out(folder: str) -> Edit:
    """Move ``folder`` of the repository to ``../outside/folder``."""

    def edit(repo: Path) -> None:
        target = repo.parent / "outside" / folder
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(repo / folder, target)

    return edit


def _many_datasets(count: int) -> Edit:
    claims = "".join(f"  set-{i:02d}:\n    path: /data/set-{i:02d}\n    samples: 10\n" for i in range(count))
    return replace(CLUSTER, "datasets:\n", "datasets:\n" + claims)


def _all(*edits: Edit) -> Edit:
    def edit(repo: Path) -> None:
        for one in edits:
            one(repo)

    return edit


CASES: dict[str, tuple[Edit, tuple[Expected, ...]]] = {
    # --- Job: one document's fields ---
    "job-unknown-field": (
        replace(JOB, "rounds: 5\n", "rounds: 5\nepochs: 3\n"),
        (Expected(JOB, "epochs: 3", "epochs", ("unknown field",)),),
    ),
    "job-unknown-nested-field": (
        replace(JOB, "  batchSize: 32\n", "  batchSize: 32\n  learningrate: 0.1\n"),
        (Expected(JOB, "learningrate", "training.learningrate", ("unknown field",)),),
    ),
    "job-missing-required-field": (
        replace(JOB, "dataset: digits\n", ""),
        (Expected(JOB, "name: mnist-digits", "dataset", ("required field is missing",)),),
    ),
    "job-missing-nested-required-field": (
        replace(JOB, "  server: ghcr.io/fleet-fl/fleet-app:0.1.0\n", ""),
        (Expected(JOB, "images:", "images.server", ("required field is missing",)),),
    ),
    "job-name-not-dns": (
        replace(JOB, "name: mnist-digits\n", "name: MNIST_Digits\n"),
        (Expected(JOB, "name: MNIST_Digits", "name", (DNS_LABEL, "'MNIST_Digits'")),),
    ),
    "job-namespace-too-long": (
        replace(JOB, "namespace: fl-mnist-digits", "namespace: " + "a" * 64),
        (Expected(JOB, "namespace:", "namespace", ("expected at most 63 characters",)),),
    ),
    "job-quantity-with-space": (
        replace(JOB, "cpu: 500m", "cpu: 4 Gi"),
        (Expected(JOB, "cpu: 4 Gi", "resources.cpu", ("expected a Kubernetes quantity", "'4 Gi'")),),
    ),
    "job-quantity-negative": (
        replace(JOB, "memory: 1Gi", "memory: -1"),
        (Expected(JOB, "memory: -1", "resources.memory", ("expected a quantity of at least 0", "-1")),),
    ),
    "job-quantity-list": (
        replace(JOB, "memory: 1Gi", "memory: [1Gi]"),
        (Expected(JOB, "memory: [1Gi]", "resources.memory", ("expected a Kubernetes quantity",)),),
    ),
    "job-rounds-string": (
        replace(JOB, "rounds: 5", 'rounds: "5"'),
        (Expected(JOB, "rounds:", "rounds", ("expected a whole number", "'5'")),),
    ),
    "job-rounds-empty": (
        replace(JOB, "rounds: 5", "rounds:"),
        (Expected(JOB, "rounds:", "rounds", ("expected a whole number", "None")),),
    ),
    "job-tls-string": (
        replace(JOB, "tls: true", 'tls: "yes"'),
        (Expected(JOB, "tls:", "tls", ("expected true or false", "'yes'")),),
    ),
    "job-framework-enum": (
        replace(JOB, "framework: flower", "framework: tensorflow"),
        (Expected(JOB, "framework:", "framework", ("expected one of 'flower' or 'openfl'", "'tensorflow'")),),
    ),
    "job-kind-of-another-folder": (
        replace(JOB, "name: mnist-digits\n", "kind: Cluster\nname: mnist-digits\n"),
        (Expected(JOB, "kind: Cluster", "kind", ("expected 'Job'", "'Cluster'")),),
    ),
    "job-fedprox-without-proximal-mu": (
        replace(JOB, "strategy: fedavg", "strategy: fedprox"),
        (Expected(JOB, "training:", "training.proximalMu", ("expected a number > 0", "strategy fedprox")),),
    ),
    "job-proximal-mu-with-fedavg": (
        replace(JOB, "  batchSize: 32\n", "  batchSize: 32\n  proximalMu: 0.1\n"),
        (
            Expected(
                JOB, "proximalMu: 0.1", "training.proximalMu", ("expected 0 or nothing", "only to strategy fedprox")
            ),
        ),
    ),
    "job-learning-rate-zero": (
        replace(JOB, "learningRate: 0.02", "learningRate: 0"),
        (Expected(JOB, "learningRate:", "training.learningRate", ("expected a number > 0", "got 0")),),
    ),
    "job-image-with-space": (
        replace(JOB, "  client: ghcr.io/fleet-fl/fleet-app:0.1.0", "  client: ghcr.io/fleet-fl/fleet app"),
        (
            Expected(
                JOB, "client:", "images.client", ("expected an OCI image reference", "'ghcr.io/fleet-fl/fleet app'")
            ),
        ),
    ),
    "job-image-not-a-reference": (
        replace(JOB, "  server: ghcr.io/fleet-fl/fleet-app:0.1.0", "  server: 'HTTP://Bad::Image::'"),
        (Expected(JOB, "  server: ", "images.server", ("expected an OCI image reference", "HTTP://Bad::Image::")),),
    ),
    "job-image-digest-not-hex": (
        replace(JOB, "  server: ghcr.io/fleet-fl/fleet-app:0.1.0", "  server: repo@sha256:xyz"),
        (Expected(JOB, "  server: ", "images.server", ("expected an OCI image reference", "repo@sha256:xyz")),),
    ),
    "job-image-digest-too-short": (
        replace(JOB, "  server: ghcr.io/fleet-fl/fleet-app:0.1.0", "  server: ghcr.io/a/b@sha256:" + "ab" * 16),
        (Expected(JOB, "  server: ", "images.server", ("expected a sha256 digest of 64 hex digits",)),),
    ),
    "job-snake-case-field": (  # the JSON Schema refuses it, so the loader must too
        replace(JOB, "maxClients: 3", "max_clients: 3"),
        (
            Expected(JOB, "max_clients:", "max_clients", ("unknown field",)),
            Expected(JOB, "name: mnist-digits", "maxClients", ("required field is missing",)),
        ),
    ),
    "job-both-spellings": (  # the valid spelling is not the one reported
        replace(JOB, "maxClients: 3", "maxClients: 3\nmax_clients: 3"),
        (Expected(JOB, "max_clients:", "max_clients", ("unknown field",)),),
    ),
    "job-dataset-name-too-long-for-its-claim": (  # 46 characters: its claim key would pass 63
        replace(JOB, "dataset: digits", "dataset: " + "d" * 46),
        (Expected(JOB, "dataset:", "dataset", ("expected at most 45 characters",)),),
    ),
    "job-node-port-out-of-range": (
        replace(JOB, "port: 30093", "port: 8080"),
        (
            Expected(
                JOB, "port: 8080", "listeners[0].port", ("expected a port in the node-port range 30000-32767", "8080")
            ),
        ),
    ),
    "job-route-without-host": (
        replace(JOB, "type: NodePort", "type: Route"),
        (Expected(JOB, "- name: server", "listeners[0].host", ("expected a host name for a Route listener",)),),
    ),
    "job-host-on-node-port": (
        replace(JOB, "    port: 30093\n", "    port: 30093\n    host: fl.example.org\n"),
        (Expected(JOB, "host: fl.example.org", "listeners[0].host", ("expected no host", "not NodePort")),),
    ),
    "job-duplicate-cluster-sets": (
        replace(JOB, "  - research-us\n", "  - research-us\n  - research-eu\n"),
        (Expected(JOB, "clusterSets:", "clusterSets", ("expected distinct cluster-set names",)),),
    ),
    "job-storage-size-zero": (
        replace(JOB, "    size: 1Gi", "    size: 0Gi"),
        (Expected(JOB, "size: 0Gi", "storage.pvc.size", ("expected a quantity greater than 0", "'0Gi'")),),
    ),
    "job-no-listeners": (
        replace(JOB, "listeners:\n  - name: server\n    type: NodePort\n    port: 30093\n", "listeners: []\n"),
        (Expected(JOB, "listeners:", "listeners", ("expected at least 1 item",)),),
    ),
    "job-duplicate-listener-names": (
        replace(
            JOB,
            "    port: 30093\n",
            "    port: 30093\n  - name: server\n    type: LoadBalancer\n    port: 9092\n",
        ),
        (Expected(JOB, "listeners:", "listeners", ("expected", "distinct listener names")),),
    ),
    "job-storage-pvc-and-s3": (
        replace(
            JOB,
            "    path: /models/mnist-digits\n",
            "    path: /models/mnist-digits\n  s3:\n    bucket: fleet-models\n    region: eu-west-1\n"
            "    credentialsSecret: fleet-models-s3\n",
        ),
        (Expected(JOB, "storage:", "storage", ("expected exactly one of 'pvc' or 's3'",)),),
    ),
    "job-storage-neither": (
        replace(
            JOB,
            "  pvc:\n    name: mnist-digits-model\n    size: 1Gi\n    path: /models/mnist-digits\n",
            "  {}\n",
        ),
        (Expected(JOB, "storage:", "storage", ("expected exactly one of 'pvc' or 's3'",)),),
    ),
    "job-min-available-above-max-clients": (
        replace(JOB, "minAvailableClients: 2", "minAvailableClients: 4"),
        (Expected(JOB, "maxClients:", "maxClients", ("expected", "minAvailableClients", "4")),),
    ),
    # --- the YAML itself ---
    "yaml-duplicate-key": (
        replace(JOB, "tls: true\n", "tls: true\nrounds: 7\n"),
        (Expected(JOB, "rounds: 7", "rounds", ("expected a key only once",)),),
    ),
    "yaml-invalid": (
        replace(JOB, "rounds: 5", "rounds: [5"),
        (Expected(JOB, "minAvailableClients:", "", ("expected valid YAML",)),),
    ),
    "yaml-tab-indent": (
        replace(JOB, "  cpu: 500m", "\tcpu: 500m"),
        (Expected(JOB, "\tcpu: 500m", "", ("expected valid YAML", "'\\t'")),),
    ),
    "yaml-two-documents": (
        append(JOB, "---\nname: other\n"),
        (Expected(JOB, "---", "", ("expected exactly one YAML document, found 2",)),),
    ),
    "yaml-alias-expansion": (  # 300 bytes that expand to a million values
        write(
            CLUSTER,
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n"
                for previous, name in zip("abcde", "bcdef", strict=True)
            ),
        ),
        (Expected(CLUSTER, "a: &a", "", ("expected at most 100,000 values with every alias expanded",)),),
    ),
    "yaml-nested-too-deep": (  # 2 KB that libyaml (PyYAML 6.0.4) refuses and the pure-Python composer crashes on
        replace(CLUSTER, "  tier: clinical\n", "  tier: clinical\nx-deep: " + "[" * 1001 + "]" * 1001 + "\n"),
        (Expected(CLUSTER, "x-deep:", "", ("expected YAML nested at most 64 levels",)),),
    ),
    "yaml-nested-too-deep-for-fleet-only": (  # 65 levels: both parsers take it, the loader does not
        replace(CLUSTER, "  tier: clinical\n", "  tier: clinical\nx-deep: " + "[" * 64 + "]" * 64 + "\n"),
        (Expected(CLUSTER, "x-deep:", "", ("expected YAML nested at most 64 levels",)),),
    ),
    "yaml-nested-too-deep-through-aliases": (  # each line nests 40 levels, 120 with the aliases expanded
        write(
            CLUSTER,
            "a: &a " + "[" * 39 + "x" + "]" * 39 + "\n"
            "b: &b " + "[" * 39 + "*a" + "]" * 39 + "\n"
            "c: &c " + "[" * 39 + "*b" + "]" * 39 + "\n",
        ),
        (Expected(CLUSTER, "c: &c", "c", ("expected YAML nested at most 64 levels",)),),
    ),
    "yaml-empty-file": (
        write(CLUSTER, ""),
        (Expected(CLUSTER, None, "", ("expected exactly one YAML document, found 0",)),),
    ),
    "yaml-comments-only": (
        write(CLUSTER, "# nothing yet\n"),
        (Expected(CLUSTER, None, "", ("expected exactly one YAML document, found 0",)),),
    ),
    "yaml-list-document": (
        write(CLUSTER, "# a list\n- name: a\n- name: b\n"),
        (Expected(CLUSTER, "- name: a", "", ("expected a mapping of Cluster fields",)),),
    ),
    "yaml-scalar-document": (
        write(CLUSTER, "eu-west-hospital\n"),
        (Expected(CLUSTER, "eu-west-hospital", "", ("expected a mapping of Cluster fields",)),),
    ),
    "yaml-not-utf8": (
        write_bytes(CLUSTER, b"name: \xff\xfe\n"),
        (Expected(CLUSTER, None, "", ("expected a readable UTF-8 YAML file",)),),
    ),
    "yaml-unknown-tag": (
        replace(CLUSTER, "clusterSet: research-eu", "clusterSet: !!python/name:os.system research-eu"),
        (Expected(CLUSTER, "clusterSet:", "", ("expected valid YAML", "python/name:os.system")),),
    ),
    "yaml-unhashable-key": (
        replace(CLUSTER, "  tier: clinical", "  ? [tier, zone]\n  : clinical"),
        (Expected(CLUSTER, "? [tier, zone]", "", ("expected valid YAML", "unhashable key")),),
    ),
    # --- Cluster ---
    "cluster-label-key": (
        replace(CLUSTER, "  tier: clinical", '  "bad key!": clinical'),
        (Expected(CLUSTER, "bad key!", "labels.bad key!", ("expected a label key", "'bad key!'")),),
    ),
    "cluster-label-key-prefix": (
        replace(CLUSTER, "  tier: clinical", "  Example.COM/tier: clinical"),
        (Expected(CLUSTER, "Example.COM", "labels.Example.COM/tier", ("prefix is a DNS subdomain",)),),
    ),
    "cluster-label-value": (
        replace(CLUSTER, "  region: eu-west", "  region: eu west"),
        (Expected(CLUSTER, "region: eu west", "labels.region", ("expected a label value", "'eu west'")),),
    ),
    "cluster-label-value-not-string": (
        replace(CLUSTER, "  tier: clinical", "  tier: 3"),
        (Expected(CLUSTER, "tier: 3", "labels.tier", ("expected a string (quote it in YAML)",)),),
    ),
    "cluster-set-not-dns": (
        replace(CLUSTER, "clusterSet: research-eu", "clusterSet: Research_EU"),
        (Expected(CLUSTER, "clusterSet:", "clusterSet", (DNS_LABEL, "'Research_EU'")),),
    ),
    "cluster-dataset-name-not-dns": (
        replace(CLUSTER, "  digits:", "  Digits:"),
        (Expected(CLUSTER, "Digits:", "datasets.Digits", (DNS_LABEL, "'Digits'")),),
    ),
    "cluster-dataset-path-relative": (
        replace(CLUSTER, "path: /data/digits/eu-west-hospital", "path: data/digits"),
        (Expected(CLUSTER, "path: data/digits", "datasets.digits.path", ("expected an absolute path",)),),
    ),
    "cluster-dataset-no-samples": (
        replace(CLUSTER, "samples: 2600", "samples: 0"),
        (Expected(CLUSTER, "samples: 0", "datasets.digits.samples", ("expected a number >= 1", "got 0")),),
    ),
    "cluster-cpu-beyond-any-range": (
        replace(CLUSTER, 'cpu: "8"', 'cpu: "1e999999"'),  # parses as a decimal, but no claim can hold it
        (Expected(CLUSTER, "cpu:", "capacity.cpu", ("expected",)),),
    ),
    "cluster-gpu-negative": (
        replace(CLUSTER, "memory: 32Gi", "memory: 32Gi\n  gpu: -1"),
        (Expected(CLUSTER, "gpu: -1", "capacity.gpu", ("expected a number >= 0", "got -1")),),
    ),
    "cluster-cpu-past-int64": (
        replace(CLUSTER, 'cpu: "8"', 'cpu: "1e30"'),
        (Expected(CLUSTER, "cpu:", "capacity.cpu", ("expected at most 9223372036854775807 millicores", "'1e30'")),),
    ),
    "cluster-memory-past-int64": (
        replace(CLUSTER, "memory: 32Gi", "memory: 8Ei"),
        (Expected(CLUSTER, "memory:", "capacity.memory", ("expected at most 9223372036854775807 bytes", "'8Ei'")),),
    ),
    "cluster-dataset-name-too-long-for-its-claim": (
        replace(CLUSTER, "  digits:\n", "  digits:\n    path: /x\n    samples: 1\n  " + "d" * 46 + ":\n"),
        (Expected(CLUSTER, "d" * 46, "datasets." + "d" * 46, ("expected at most 45 characters",)),),
    ),
    "cluster-capacity-missing": (
        replace(CLUSTER, 'capacity:\n  cpu: "8"\n  memory: 32Gi\n', ""),
        (Expected(CLUSTER, "name: eu-west-hospital", "capacity", ("required field is missing",)),),
    ),
    "cluster-too-many-dataset-claims": (
        _many_datasets(17),  # 17 + digits = 18 datasets, + 3 capacity claims = 21 > 20
        (Expected(CLUSTER, "datasets:", "datasets", ("expected at most 17 datasets", "claims 18")),),
    ),
    # --- DataLocalityPolicy ---
    "policy-in-without-values": (
        replace(POLICY, "      values: [eu-west, eu-central]\n", ""),
        (
            Expected(
                POLICY,
                "- key: region",
                "allowedClusters.matchExpressions[0].values",
                ("expected a non-empty list for operator In",),
            ),
        ),
    ),
    "policy-exists-with-values": (
        replace(POLICY, "operator: In", "operator: Exists"),
        (
            Expected(
                POLICY,
                "values:",
                "allowedClusters.matchExpressions[0].values",
                ("expected no values for operator Exists",),
            ),
        ),
    ),
    "policy-unknown-operator": (
        replace(POLICY, "operator: In", "operator: Contains"),
        (
            Expected(
                POLICY,
                "operator:",
                "allowedClusters.matchExpressions[0].operator",
                ("expected one of 'In', 'NotIn', 'Exists' or 'DoesNotExist'", "'Contains'"),
            ),
        ),
    ),
    "policy-no-datasets": (
        replace(POLICY, "datasets:\n  - digits\n", "datasets: []\n"),
        (Expected(POLICY, "datasets:", "datasets", ("expected at least 1 item",)),),
    ),
    "policy-dataset-typo": (  # `digit`: the policy would govern nothing and the EU-only job place a US cluster
        replace(POLICY, "  - digits\n", "  - digit\n"),
        (Expected(POLICY, "  - digit", "datasets[0]", ("expected a dataset some cluster", "did you mean 'digits'?")),),
    ),
    "policy-governs-no-held-dataset": (
        replace(POLICY, "  - digits\n", "  - radiology\n"),
        (Expected(POLICY, "  - radiology", "datasets[0]", ("expected a dataset some cluster", "got 'radiology'")),),
    ),
    "policy-second-dataset-typo": (  # a held dataset and a near miss of it
        replace(POLICY, "  - digits\n", "  - digits\n  - digitz\n"),
        (Expected(POLICY, "  - digitz", "datasets[1]", ("did you mean 'digits'?",)),),
    ),
    "policy-min-clients-zero": (
        replace(POLICY, "minClientsPerRound: 2", "minClientsPerRound: 0"),
        (Expected(POLICY, "minClientsPerRound:", "rules.minClientsPerRound", ("expected a number >= 1",)),),
    ),
    "policy-require-tls-string": (
        replace(POLICY, "requireTls: true", 'requireTls: "true"'),
        (Expected(POLICY, "requireTls:", "rules.requireTls", ("expected true or false", "'true'")),),
    ),
    # --- the files and folders themselves ---
    "entry-symlink-out-of-the-repository": (
        _all(outside("leak.yaml", f"name: {SECRET}\n"), symlink("jobs/leak.yaml", "../../outside/leak.yaml")),
        (Expected("jobs/leak.yaml", None, "", ("expected a regular file, not a symbolic link", "never follows")),),
    ),
    "entry-symlink-within-the-repository": (  # Git stores it as a link, which Argo CD and Flux each treat their way
        symlink("jobs/alias.yaml", "mnist-digits.yaml"),
        (Expected("jobs/alias.yaml", None, "", ("expected a regular file, not a symbolic link",)),),
    ),
    "entry-symlink-broken": (
        symlink("clusters/gone.yaml", "no-such-file.yaml"),
        (Expected("clusters/gone.yaml", None, "", ("expected a regular file, not a symbolic link",)),),
    ),
    "entry-extension-upper-case": (  # the job would drop out of the render, and GitOps prune it
        rename(JOB, "jobs/mnist-digits.YAML"),
        (
            Expected(
                "jobs/mnist-digits.YAML",
                None,
                "",
                ("expected the extension .yaml or .yml (lower case)", "got '.YAML'"),
            ),
        ),
    ),
    "entry-extension-mixed-case": (
        copy(POLICY, "policies/strict.Yml"),
        (Expected("policies/strict.Yml", None, "", ("expected the extension .yaml or .yml (lower case)", "'.Yml'")),),
    ),
    "entry-without-extension": (  # a valid job but for its name: not read, so reported
        copy(JOB, "jobs/mnist-digits-v2"),
        (Expected("jobs/mnist-digits-v2", None, "", ("expected the extension .yaml or .yml", "without one")),),
    ),
    "entry-folder-named-like-a-definition": (
        mkdir("jobs/archive.yaml"),
        (Expected("jobs/archive.yaml", None, "", ("expected a regular file, not a folder",)),),
    ),
    "entry-sub-folder": (  # its definitions would not be read
        _all(mkdir("clusters/retired"), copy(CLUSTER, "clusters/retired/old.yaml")),
        (Expected("clusters/retired", None, "", ("expected no sub-folders", "directly in clusters/")),),
    ),
    "entry-fifo": (  # opening it for reading would block until a writer comes: never opened
        mkfifo("jobs/pipe.yaml"),
        (Expected("jobs/pipe.yaml", None, "", ("expected a regular file, not a FIFO",)),),
    ),
    "folder-symlink-out-of-the-repository": (
        _all(move_out("jobs"), outside("jobs/leak.yaml", f"name: {SECRET}\n"), symlink("jobs", "../outside/jobs")),
        (Expected("jobs", None, "", ("expected a folder, not a symbolic link", "never follows")),),
    ),
    "folder-is-a-file": (
        _all(move_out("policies"), write("policies", "name: digits-residency\n")),
        (Expected("policies", None, "", ("expected a folder, not a file",)),),
    ),
    # --- across files ---
    "cross-duplicate-cluster-name": (
        copy(CLUSTER, "clusters/zz-copy.yaml"),
        (
            Expected(
                "clusters/zz-copy.yaml",
                "name: eu-west-hospital",
                "name",
                ("expected a unique name", f"also defined in {CLUSTER}:2"),
            ),
        ),
    ),
    "cross-duplicate-job-name": (
        copy(JOB, "jobs/another.yml"),
        (
            Expected(
                JOB,
                "name: mnist-digits",
                "name",
                ("expected a unique name", "also defined in jobs/another.yml:3"),
            ),
        ),
    ),
    "cross-nodeport-used-by-another-job": (
        _all(
            copy(JOB, "jobs/zz-second.yaml"),
            replace("jobs/zz-second.yaml", "name: mnist-digits\n", "name: second\n"),
            replace("jobs/zz-second.yaml", "namespace: fl-mnist-digits", "namespace: fl-second"),
        ),
        (
            Expected(
                "jobs/zz-second.yaml",
                "port: 30093",
                "listeners[0].port",
                ("expected a NodePort no other listener uses", f"listener 'server' of job 'mnist-digits' ({JOB})"),
            ),
        ),
    ),
    "cross-job-in-the-controller-namespace": (
        replace(JOB, "namespace: fl-mnist-digits", "namespace: fleet-system"),
        (Expected(JOB, "namespace:", "namespace", ("expected a namespace of the job's own", "renderer")),),
    ),
    "cross-job-in-a-cluster-namespace": (
        replace(JOB, "namespace: fl-mnist-digits", "namespace: eu-west-hospital"),
        (Expected(JOB, "namespace:", "namespace", ("managed cluster 'eu-west-hospital'",)),),
    ),
    "cross-dataset-no-cluster-holds": (
        replace(JOB, "dataset: digits", "dataset: faces"),
        (Expected(JOB, "dataset: faces", "dataset", ("expected a dataset that some cluster", "'faces'")),),
    ),
    "cross-too-few-eligible-by-region-policy": (
        replace(POLICY, "values: [eu-west, eu-central]", "values: [eu-central]"),
        _in_both_jobs(
            Expected(
                JOB,
                "minAvailableClients:",
                "minAvailableClients",
                (
                    "expected at most 1",
                    "(eu-central-lab)",
                    "eu-west-hospital: label selector region In ['eu-central']",
                ),
            )
        ),
    ),
    "cross-too-few-eligible-by-capacity": (
        replace(JOB, "cpu: 500m", 'cpu: "10"'),
        (
            Expected(
                JOB,
                "minAvailableClients:",
                "minAvailableClients",
                (
                    "expected at most 1",
                    "(eu-central-lab)",
                    "eu-west-hospital: CEL selector not met",
                    ">= 10000",
                ),
            ),
        ),
    ),
    "cross-too-few-eligible-by-cluster-set": (
        replace(JOB, "  - research-eu\n", ""),
        (
            Expected(
                JOB,
                "minAvailableClients:",
                "minAvailableClients",
                ("expected at most 0", "(none)", "'research-eu' is not among the job's clusterSets"),
            ),
        ),
    ),
    "cross-tls-off-on-governed-dataset": (
        replace(JOB, "tls: true", "tls: false"),
        (Expected(JOB, "tls: false", "tls", ("expected true", "'digits-residency'", "requires TLS")),),
    ),
    "cross-policy-minimum-above-job-minimum": (
        replace(POLICY, "minClientsPerRound: 2", "minClientsPerRound: 3"),
        _in_both_jobs(
            Expected(
                JOB,
                "minAvailableClients:",
                "minAvailableClients",
                ("expected at least 3", "'digits-residency'", "clients per round"),
            )
        ),
    ),
    "cross-differential-privacy-required-and-absent": (
        replace(POLICY, "  egressOnlyToAggregator: true\n", "  egressOnlyToAggregator: true\n" + _DP_RULE),
        _in_both_jobs(
            Expected(
                JOB,
                "name: mnist-digits",
                "privacy.differentialPrivacy",
                ("expected differential privacy", "at most 3", "'digits-residency'", "'digits'"),
            )
        ),
    ),
    "cross-differential-privacy-without-a-budget": (
        _all(
            replace(POLICY, "  egressOnlyToAggregator: true\n", "  egressOnlyToAggregator: true\n" + _DP_RULE),
            append(JOB, _privacy("differentialPrivacy:\n    noiseMultiplier: 1.0\n    clippingNorm: 1.0\n")),
        ),
        (
            Expected(
                JOB,
                "differentialPrivacy:",
                "privacy.differentialPrivacy.epsilon",
                ("expected a budget of at most 3", "fixed"),
            ),
            _OPENFL_JOB_WITHOUT_DP,
        ),
    ),
    "cross-differential-privacy-over-the-policy-budget": (
        _all(
            replace(POLICY, "  egressOnlyToAggregator: true\n", "  egressOnlyToAggregator: true\n" + _DP_RULE),
            append(JOB, _privacy(_DP + "    epsilon: 5.5\n")),
        ),
        (
            Expected(
                JOB,
                "epsilon: 5.5",
                "privacy.differentialPrivacy.epsilon",
                ("expected at most 3, got 5.5", "maxEpsilon"),
            ),
            _OPENFL_JOB_WITHOUT_DP,
        ),
    ),
    "cross-differential-privacy-at-a-delta-above-the-policys": (
        _all(
            replace(POLICY, "  egressOnlyToAggregator: true\n", "  egressOnlyToAggregator: true\n" + _DP_RULE),
            append(JOB, _privacy(_DP + "    epsilon: 2\n    targetDelta: 0.5\n")),
        ),
        (
            Expected(
                JOB,
                "targetDelta: 0.5",
                "privacy.differentialPrivacy.targetDelta",
                ("expected at most 1e-05, got 0.5", "maxDelta"),
            ),
            _OPENFL_JOB_WITHOUT_DP,
        ),
    ),
    "cross-secure-aggregation-required-and-absent": (
        replace(
            POLICY,
            "  egressOnlyToAggregator: true\n",
            "  egressOnlyToAggregator: true\n  requireSecureAggregation: true\n",
        ),
        _in_both_jobs(
            Expected(
                JOB,
                "name: mnist-digits",
                "privacy.secureAggregation",
                ("expected secure aggregation", "'digits-residency'"),
            )
        ),
    ),
    "policy-require-differential-privacy-needs-a-budget": (
        replace(
            POLICY,
            "  egressOnlyToAggregator: true\n",
            "  egressOnlyToAggregator: true\n  requireDifferentialPrivacy: {}\n",
        ),
        (
            Expected(
                POLICY,
                "requireDifferentialPrivacy:",
                "rules.requireDifferentialPrivacy.maxEpsilon",
                ("required field is missing",),
            ),
        ),
    ),
    "job-adaptive-clipping-with-a-budget": (
        append(JOB, _privacy(_DP + "    clipping: adaptive\n    clippedCountStddev: 1.0\n    epsilon: 3\n")),
        (Expected(JOB, "differentialPrivacy:", "privacy.differentialPrivacy", ("no epsilon", "accountant")),),
    ),
    "job-adaptive-clipping-with-too-much-noise-for-the-count": (
        append(JOB, _privacy(_DP + "    clipping: adaptive\n")),
        (Expected(JOB, "privacy:", "privacy", ("below 0.2", "clippedCountStddev")),),
    ),
    "job-secure-aggregation-with-server-side-clipping": (
        append(JOB, _privacy(_DP + "  secureAggregation: {shares: 3, reconstructionThreshold: 2}\n")),
        (Expected(JOB, "privacy:", "privacy", ("side: client", "in clear")),),
    ),
    "job-secure-aggregation-with-client-side-clipping": (
        append(JOB, _privacy(_DP + "    side: client\n  secureAggregation: {shares: 3, reconstructionThreshold: 2}\n")),
        (Expected(JOB, "privacy:", "privacy", ("not both", "legacy path")),),
    ),
    "job-secure-aggregation-even-shares": (
        append(JOB, _privacy("secureAggregation: {shares: 2, reconstructionThreshold: 1}\n")),
        (
            Expected(JOB, "secureAggregation:", "privacy.secureAggregation.shares", ("expected a number >= 3, got 2",)),
            Expected(
                JOB,
                "secureAggregation:",
                "privacy.secureAggregation.reconstructionThreshold",
                ("expected a number >= 2, got 1",),
            ),
        ),
    ),
    "job-secure-aggregation-more-shares-than-clients": (
        append(JOB, _privacy("secureAggregation: {shares: 5, reconstructionThreshold: 2}\n")),
        (Expected(JOB, "privacy:", "privacy", ("shares at most maxClients (3)", "got 5")),),
    ),
    "job-secure-aggregation-threshold-not-below-shares": (
        append(JOB, _privacy("secureAggregation: {shares: 3, reconstructionThreshold: 3}\n")),
        (
            Expected(
                JOB,
                "secureAggregation:",
                "privacy.secureAggregation.reconstructionThreshold",
                ("expected fewer than shares (3), got 3",),
            ),
        ),
    ),
    "several-errors-in-several-files": (
        _all(
            replace(JOB, "rounds: 5", 'rounds: "5"'),
            replace(CLUSTER, "  region: eu-west", "  region: eu west"),
            replace(POLICY, "operator: In", "operator: Contains"),
            write("clusters/empty.yaml", ""),
        ),
        (
            Expected(JOB, "rounds:", "rounds", ("expected a whole number",)),
            Expected(CLUSTER, "region: eu west", "labels.region", ("expected a label value",)),
            Expected(POLICY, "operator:", "allowedClusters.matchExpressions[0].operator", ("expected one of",)),
            Expected("clusters/empty.yaml", None, "", ("found 0",)),
        ),
    ),
}


def _line(repo: Path, expected: Expected) -> int | None:
    if expected.marker is None:
        return None
    lines = (repo / expected.file).read_text(encoding="utf-8").splitlines()
    return next(number for number, text in enumerate(lines, 1) if expected.marker in text)


def assert_problems(repo: Path, problems: list[Problem], expected: tuple[Expected, ...]) -> None:
    """Exactly the expected problems: one each, with the file, line, field and phrases named."""
    shown = "\n".join(str(p) for p in problems)
    assert len(problems) == len(expected), f"expected {len(expected)} problem(s), got:\n{shown}"
    for want in expected:
        matching = [p for p in problems if p.file == want.file and p.field == want.field]
        assert len(matching) == 1, f"no single problem in {want.file} at field {want.field!r}:\n{shown}"
        problem = matching[0]
        assert problem.line == _line(repo, want), f"wrong line:\n{shown}"
        for phrase in want.phrases:
            assert phrase in problem.message, f"{phrase!r} not in {problem.message!r}"


def test_the_bundled_example_loads(example_repo: Path) -> None:
    repository = load_repository(example_repo)
    assert list(repository.jobs) == EXAMPLE_JOBS
    assert len(repository.clusters) == 5
    assert list(repository.policies) == ["digits-residency"]
    assert repository.source(repository.jobs["mnist-digits"]).file == JOB
    assert repository.source(repository.jobs["mnist-digits-openfl"]).file == OPENFL_JOB


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_reported_with_file_line_field_and_expectation(example_repo: Path, case: str) -> None:
    edit, expected = CASES[case]
    edit(example_repo)
    before = sorted(p.relative_to(example_repo) for p in example_repo.rglob("*"))

    with pytest.raises(InvalidRepository) as raised, deadline(60):
        load_repository(example_repo)

    assert_problems(example_repo, raised.value.problems, expected)
    assert str(raised.value) == "\n".join(str(p) for p in raised.value.problems)
    assert sorted(p.relative_to(example_repo) for p in example_repo.rglob("*")) == before  # nothing written


def test_problems_print_as_file_line_field_message() -> None:
    assert str(Problem("jobs/a.yaml", 9, "rounds", "expected a whole number")) == (
        "jobs/a.yaml:9: rounds: expected a whole number"
    )
    assert str(Problem("jobs/a.yaml", None, "", "expected one document")) == "jobs/a.yaml: expected one document"


def test_problems_are_sorted_and_deduplicated() -> None:
    second = Problem("jobs/b.yaml", 1, "name", "x")
    first = Problem("jobs/a.yaml", 7, "rounds", "y")
    error = InvalidRepository([second, first, second])
    assert error.problems == [first, second]


def test_an_empty_repository_loads(tmp_path: Path) -> None:
    repository = load_repository(tmp_path)
    assert (repository.jobs, repository.clusters, repository.policies) == ({}, {}, {})


def test_files_other_than_yaml_are_ignored(example_repo: Path) -> None:
    (example_repo / "jobs" / "README.md").write_text("# not a job\n")
    (example_repo / "clusters" / "notes.txt").write_text("name: [\n")
    assert list(load_repository(example_repo).jobs) == EXAMPLE_JOBS


def test_dotfiles_and_files_with_other_extensions_are_ignored(example_repo: Path) -> None:
    jobs = example_repo / "jobs"
    (jobs / ".gitkeep").write_text("")
    (jobs / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (jobs / ".mnist-digits.yaml.swp").write_bytes(b"b0VIM 9.1\x00\xff")  # vim's swap file
    (jobs / "mnist-digits.yaml~").write_text("name: [\n")  # an editor's backup
    (jobs / ".archive").mkdir()  # a folder kept aside on purpose
    (jobs / ".archive" / "old.yaml").write_text("name: [\n")
    (jobs / ".current.yaml").symlink_to("mnist-digits.yaml")
    (jobs / "NOTES.md").write_text("name: [\n")
    assert list(load_repository(example_repo).jobs) == EXAMPLE_JOBS


@pytest.mark.parametrize("case", ["entry-symlink-out-of-the-repository", "folder-symlink-out-of-the-repository"])
def test_a_link_out_of_the_repository_is_never_read(example_repo: Path, case: str) -> None:
    CASES[case][0](example_repo)
    with pytest.raises(InvalidRepository) as raised:
        load_repository(example_repo)
    assert SECRET not in str(raised.value)

    # Read, the same file would have been echoed: the assertion above can fail.
    link = example_repo / "jobs" if case.startswith("folder") else example_repo / "jobs" / "leak.yaml"
    link.unlink()
    (example_repo / "jobs").mkdir(exist_ok=True)
    (example_repo / "jobs" / "leak.yaml").write_text(f"name: {SECRET}\n")
    with pytest.raises(InvalidRepository) as raised:
        load_repository(example_repo)
    assert SECRET in str(raised.value)


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda path, secret: path.symlink_to(secret), "not a symbolic link"),
        (lambda path, secret: os.mkfifo(path), "not a FIFO"),
    ],
    ids=["symlink", "fifo"],
)
def test_an_entry_swapped_after_its_check_is_not_read(
    example_repo: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[Path, Path], None], phrase: str
) -> None:
    secret = example_repo.parent / "secret.yaml"
    secret.write_text(f"name: {SECRET}\n")
    make(example_repo / "jobs" / "swapped.yaml", secret)
    real_stat = os.stat

    def stat_before_the_swap(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if path == "swapped.yaml":  # the check saw a regular file; then it became a link or a FIFO
            return real_stat(secret)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_before_the_swap)
    with pytest.raises(InvalidRepository) as raised, deadline(60):
        load_repository(example_repo)
    monkeypatch.undo()

    [problem] = raised.value.problems
    assert (problem.file, problem.line, problem.field) == ("jobs/swapped.yaml", None, "")
    assert phrase in problem.message
    assert SECRET not in str(raised.value)


def test_yml_files_are_read(example_repo: Path) -> None:
    (example_repo / JOB).rename(example_repo / "jobs" / "mnist-digits.yml")
    assert list(load_repository(example_repo).jobs) == EXAMPLE_JOBS


def test_a_policy_may_govern_a_dataset_not_held_yet_beside_a_held_one(example_repo: Path) -> None:
    replace(POLICY, "  - digits\n", "  - digits\n  - radiology\n")(example_repo)
    assert load_repository(example_repo).policies["digits-residency"].datasets == ("digits", "radiology")


def test_a_valid_edit_still_loads(example_repo: Path) -> None:
    replace(JOB, "minAvailableClients: 2", "minAvailableClients: 3")(example_repo)
    replace(
        JOB,
        "  pvc:\n    name: mnist-digits-model\n    size: 1Gi\n    path: /models/mnist-digits\n",
        "  s3:\n    bucket: fleet-models\n    region: eu-west-1\n    credentialsSecret: fleet-models-s3\n",
    )(example_repo)
    job = load_repository(example_repo).jobs["mnist-digits"]
    assert job.min_available_clients == 3
    assert job.storage.s3 is not None
    assert job.storage.s3.bucket == "fleet-models"


def test_seventeen_datasets_are_allowed(example_repo: Path) -> None:
    _many_datasets(16)(example_repo)  # 16 + digits = 17 datasets + 3 capacity claims = 20, the default limit
    assert len(load_repository(example_repo).clusters["eu-west-hospital"].datasets) == 17
