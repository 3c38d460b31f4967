"""Policy (OCM governance): desired state the policy framework enforces on the clusters it is placed on."""

from __future__ import annotations

from typing import Any

from constructs import Construct

from render.constructs.base import HubObject

STANDARDS_ANNOTATION = "policy.open-cluster-management.io/standards"
CATEGORIES_ANNOTATION = "policy.open-cluster-management.io/categories"
CONTROLS_ANNOTATION = "policy.open-cluster-management.io/controls"


class Policy(HubObject):
    """A Policy wrapping one ConfigurationPolicy per entry of ``configuration_policies`` (name -> spec)."""

    def __init__(
        self,
        scope: Construct,
        *,
        name: str,
        namespace: str,
        configuration_policies: dict[str, dict[str, Any]],
        remediation_action: str,
        controls: str,
        component: str,
        instance: str,
        source: str,
        labels: dict[str, str] | None = None,
    ) -> None:
        templates = [
            {
                "objectDefinition": {
                    "apiVersion": "policy.open-cluster-management.io/v1",
                    "kind": "ConfigurationPolicy",
                    "metadata": {"name": template_name},
                    "spec": spec,
                }
            }
            for template_name, spec in configuration_policies.items()
        ]
        super().__init__(
            scope,
            api_version="policy.open-cluster-management.io/v1",
            kind="Policy",
            name=name,
            namespace=namespace,
            component=component,
            instance=instance,
            source=source,
            labels=labels,
            annotations={
                STANDARDS_ANNOTATION: "fleet data locality",
                CATEGORIES_ANNOTATION: "data residency",
                CONTROLS_ANNOTATION: controls,
            },
            body={
                "spec": {
                    "disabled": False,
                    "remediationAction": remediation_action,
                    "policy-templates": templates,
                }
            },
        )
