"""The project's CustomResourceDefinitions (FederatedLearning, ManagedClusterLabels), generated from the models:
one definition of each of the project's own kinds for the renderer (which writes it), `fleet validate` (which
checks the kind wherever it is) and the controller (which names it). Pure Python: loading it starts no cdk8s.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from fleet.claims import API_GROUP
from fleet.models import FederatedLearningSpec, FederatedLearningStatus

KIND = "FederatedLearning"
PLURAL = "federatedlearnings"
SHORT_NAME = "fedl"
VERSION = "v1alpha1"


def federated_learning_crd_spec() -> dict[str, Any]:
    """The ``spec`` of the FederatedLearning CustomResourceDefinition (a fresh copy each call)."""
    return copy.deepcopy(_crd_spec())


@cache
def _crd_spec() -> dict[str, Any]:
    # Here, not at the top: fleet.schemas loads the repository models, which the controller's start needs not.
    from fleet.schemas import structural_schema

    spec_schema = structural_schema(FederatedLearningSpec)
    # client.placement is an OCM Placement spec: kept as written, the Placement CRD validates it on its own.
    spec_schema["properties"]["client"]["properties"]["placement"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return {
        "group": API_GROUP,
        "names": {
            "kind": KIND,
            "listKind": f"{KIND}List",
            "plural": PLURAL,
            "singular": KIND.lower(),
            "shortNames": [SHORT_NAME],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "description": "A federated-learning job run across OCM clusters.",
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": spec_schema,
                            "status": structural_schema(FederatedLearningStatus),
                        },
                        "required": ["spec"],
                    }
                },
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Round", "type": "integer", "jsonPath": ".status.currentRound"},
                    {"name": "Rounds", "type": "integer", "jsonPath": ".spec.server.rounds"},
                    {"name": "Dataset", "type": "string", "jsonPath": ".spec.dataset"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }
        ],
    }


def federated_learning_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object (a fresh copy each call)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}"},  # the API server requires <plural>.<group>
        "spec": federated_learning_crd_spec(),
    }


LABELS_KIND = "ManagedClusterLabels"
LABELS_PLURAL = "managedclusterlabels"


def managed_cluster_labels_crd_spec() -> dict[str, Any]:
    """The ``spec`` of the ManagedClusterLabels CustomResourceDefinition (a fresh copy each call): one
    cluster-scoped object per ``clusters/`` file, named after its ManagedCluster."""
    return copy.deepcopy(_labels_crd_spec())


@cache
def _labels_crd_spec() -> dict[str, Any]:
    from fleet.models import ManagedClusterLabelsSpec, ManagedClusterLabelsStatus
    from fleet.schemas import structural_schema

    return {
        "group": API_GROUP,
        "names": {
            "kind": LABELS_KIND,
            "listKind": f"{LABELS_KIND}List",
            "plural": LABELS_PLURAL,
            "singular": LABELS_KIND.lower(),
        },
        "scope": "Cluster",
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "description": (
                            "The labels and cluster set Git declares for the ManagedCluster of the same name; "
                            "the fleet controller applies them under its own field manager and removes exactly "
                            "those when this object is deleted."
                        ),
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": structural_schema(ManagedClusterLabelsSpec),
                            "status": structural_schema(ManagedClusterLabelsStatus),
                        },
                        "required": ["spec"],
                    }
                },
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Cluster set", "type": "string", "jsonPath": ".spec.clusterSet"},
                    {
                        "name": "Applied",
                        "type": "string",
                        "jsonPath": ".status.conditions[?(@.type=='Applied')].status",
                    },
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }
        ],
    }


def managed_cluster_labels_crd() -> dict[str, Any]:
    """The whole ManagedClusterLabels CustomResourceDefinition object (a fresh copy each call)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{LABELS_PLURAL}.{API_GROUP}"},
        "spec": managed_cluster_labels_crd_spec(),
    }
