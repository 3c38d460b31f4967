"""Connecting a command to the hub: one place that turns an unusable kubeconfig into exit 2, for every command
that reads the hub (`fleet controller`, `fleet status --hub`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fleet.errors import EXIT_INVALID

if TYPE_CHECKING:
    from fleet.controller.hub import HubClient


def hub_client_or_exit(kubeconfig: str | Path | None, context: str | None, command: str) -> HubClient:
    """A client for the hub ``kubeconfig`` (or the default one) points at; exit 2 saying why when the file is
    no kubeconfig, has no such context, or there is neither a kubeconfig nor an in-cluster service account."""
    # Imported here: the Kubernetes client is heavy, and `fleet status` without --hub never needs it.
    from fleet.controller.hub import HubClient, KubeconfigError

    try:
        return HubClient.from_kubeconfig(None if kubeconfig is None else str(kubeconfig), context)
    except KubeconfigError as error:
        click.echo(f"fleet {command}: expected a usable kubeconfig: {error}", err=True)
        sys.exit(EXIT_INVALID)
