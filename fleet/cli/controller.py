"""``fleet controller``: run the in-cluster controller, in its Deployment or locally against any kubeconfig."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import click

from fleet.hub import CONTROLLER_NAMESPACE


@click.command("controller")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="The hub's kubeconfig.  [default: $KUBECONFIG or ~/.kube/config, else the in-cluster service account]",
)
@click.option("--context", default=None, help="The kubeconfig context.  [default: its current context]")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Serve only these namespaces (kopf globs; repeat). They must include the managed clusters' namespaces, "
    "where the ManifestWorks go.  [default: the whole cluster]",
)
@click.option(
    "--standalone/--peering",
    default=True,
    show_default=True,
    help="Run without kopf's peering (one controller replica, as the rendered Deployment runs).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between a job's periodic reconciles.",
)
@click.option(
    "--node-host",
    envvar="FLEET_NODE_HOST",
    default="",
    help="Host name or address at which collaborators reach the hub's nodes, for NodePort listeners "
    "($FLEET_NODE_HOST). Without it a NodePort listener has no address and collaborators dial the in-hub Service.",
)
@click.option(
    "--ca-namespace",
    envvar="POD_NAMESPACE",
    default=CONTROLLER_NAMESPACE,
    show_default=True,
    help="Namespace of the hub CA Secret ($POD_NAMESPACE in the rendered Deployment: the controller's own).",
)
@click.option(
    "--models-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Read each job's progress from <models-root>/<model path> (its storage mapped on this machine) instead "
    "of the progress sidecar of its SuperLink.",
)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=9090, show_default=True)
@click.option("--health-port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--verbose", is_flag=True, help="Log every handler call.")
def command(
    kubeconfig: str | None,
    context: str | None,
    namespaces: tuple[str, ...],
    standalone: bool,
    interval: float,
    node_host: str,
    ca_namespace: str,
    models_root: Path | None,
    metrics_port: int,
    health_port: int,
    verbose: bool,
) -> None:
    """Drive every FederatedLearning job on the hub through its rounds (see `fleet.controller`).

    Serves /metrics on --metrics-port and /healthz on --health-port. Exit 2 when the kubeconfig cannot be used.
    """
    from fleet.cli._hub import hub_client_or_exit
    from fleet.controller.operator import Controller, Options, run_operator
    from fleet.controller.progress import FileProgress

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    hub = hub_client_or_exit(kubeconfig, context, "controller")
    options = Options(
        namespaces=namespaces,
        interval=interval,
        node_host=node_host,
        ca_namespace=ca_namespace,
        metrics_port=metrics_port,
        health_port=health_port,
        standalone=standalone,
    )
    controller = Controller(hub, options, progress=FileProgress(models_root) if models_root else None)

    async def serve() -> None:
        # SIGTERM (the pod stopping) and Ctrl-C end the operator gracefully: reconciles under way finish first.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await run_operator(controller, stop_flag=stop)

    asyncio.run(serve())
