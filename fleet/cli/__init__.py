"""The `fleet` command line.

Each sub-command lives in its own module (``fleet/cli/<name>.py``) exposing a click command named ``command``.
They are imported only when invoked, so that ``fleet run`` never pays for cdk8s and ``fleet render`` never
pays for torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

# command name -> module under fleet.cli
_COMMANDS: dict[str, str] = {
    "validate": "validate",
    "render": "render",
    "schema": "schema",
    "plan": "plan",
    "data": "data",
    "run": "run",
    "status": "status",
    "evaluate": "evaluate",
    "controller": "controller",
}
SUMMARIES: dict[str, str] = {
    "controller": "Drive every FederatedLearning job on the hub through its phases.",
    "data": "Prepare the data the collaborators train on.",
    "evaluate": "Check a model a run saved on the held-out split, per digit.",
    "plan": "Show where each job's Placement puts it, and why every other cluster is out.",
    "render": "Render jobs/, clusters/ and policies/ into hub manifests.",
    "run": "Run JOB on this machine over mutual TLS.",
    "schema": "Generate the JSON Schemas of Job, Cluster and DataLocalityPolicy.",
    "status": "Show the status of JOB (or of every job).",
    "validate": "Validate Kubernetes manifests strictly.",
}
"""``fleet --help``'s one line per command, so that listing them imports none of them (every command
module together imports pydantic, numpy and cryptography: 0.6 s); a test keeps each one true to its command."""


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _COMMANDS if _module_exists(_COMMANDS[name]))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUMMARIES[name]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _COMMANDS.get(cmd_name)
        if module_name is None or not _module_exists(module_name):
            return None
        module = importlib.import_module(f"fleet.cli.{module_name}")
        command: click.Command = module.command
        return command


def _module_exists(module_name: str) -> bool:
    return importlib.util.find_spec(f"fleet.cli.{module_name}") is not None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fleet")
def main(**_: Any) -> None:
    """Federated learning across an Open Cluster Management fleet, declared in Git."""
