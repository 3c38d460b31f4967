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


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _COMMANDS if _module_exists(_COMMANDS[name]))

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
