"""Names of hub objects that the renderer writes and the controller and ``fleet plan`` read."""

from __future__ import annotations

CONTROLLER_NAMESPACE = "fleet-system"
CONTROLLER_NAME = "fleet-controller"
ADDON_NAME = "fleet-collaborator"
"""The OCM add-on making a managed cluster a collaborator: a Flower SuperNode with a hub-signed identity."""
ADDON_INSTALL_NAMESPACE = "fleet-collaborator"
"""Namespace on each managed cluster where the collaborator runs."""
ADDON_SIGNER = "fleet.dev/collaborator"
"""The CustomSigner name under which the hub signs each collaborator's client certificate."""
HUB_CA_SECRET = "fleet-hub-ca"
"""Secret (in CONTROLLER_NAMESPACE) holding the hub CA that signs collaborator and SuperLink certificates."""
POLICY_NAMESPACE = "fleet-policies"
"""Hub namespace for the governance policies rendered from policies/."""
CLAIMS_WORK_NAME = "fleet-cluster-claims"
"""The ManifestWork that delivers a cluster's dataset and capacity ClusterClaims."""
