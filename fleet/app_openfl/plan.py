"""The OpenFL plan of a fleet job: what ``plan/plan.yaml`` says, the same for `fleet run` and for the hub.

OpenFL derives the federation's id from a hash of the whole plan and refuses a collaborator whose plan hashes
otherwise, so the aggregator and every collaborator get the same document: the aggregator's address is the one
the collaborators dial (on the hub, its listener's), which is also where its certificate's file name comes from
(``cert/server/agg_<address>.crt``); the aggregator itself listens on ``[::]:<port>``.

Plain data only (no OpenFL import): the controller builds it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PLAN = "plan/plan.yaml"
COLLABORATORS = "plan/cols.yaml"
DATA = "plan/data.yaml"
CONNECTED = "logs/connected.json"
"""In the workspace: the collaborators that asked the aggregator for work (`fleet.app_openfl.aggregator`)."""
LEFT_OUT = "logs/left-out.json"
"""In the workspace: the collaborators `fleet run` lost, which no round waits for (`LeftOutPolicy`)."""


@dataclass(frozen=True)
class PlanSettings:
    rounds: int
    min_available_clients: int
    strategy: str
    local_epochs: int
    learning_rate: float
    batch_size: int
    proximal_mu: float
    round_timeout_seconds: int
    tls: bool
    address: str
    """The aggregator's address as the collaborators dial it (host name or IP)."""
    port: int
    model_dir: str
    """Where the aggregator writes progress, checkpoints, the model and metrics."""
    input_side: int
    """The side of the images (8 or 28): what the initial model is built for."""
    test_data: str = ""
    seed: int = 0


def plan_document(settings: PlanSettings) -> dict[str, Any]:
    """``plan/plan.yaml``: fleet's aggregator, task runner, data loader and round policy, over OpenFL's TLS."""
    s = settings
    return {
        "aggregator": {
            "template": "fleet.app_openfl.aggregator.ProgressAggregator",
            "settings": {
                "init_state_path": "save/init.pbuf",
                "best_state_path": "save/best.pbuf",
                "last_state_path": "save/last.pbuf",
                "rounds_to_train": s.rounds,
                "db_store_rounds": 2,
                "write_logs": True,
                "persist_checkpoint": True,
                "persistent_db_path": "local_state/tensor.db",
                "model_dir": s.model_dir,
                "input_side": s.input_side,
                "test_data": s.test_data,
                "seed": s.seed,
                "min_available_clients": s.min_available_clients,
                "round_timeout": s.round_timeout_seconds,
                "connected_file": CONNECTED,
                "run_settings": {
                    "framework": "openfl",
                    "num_rounds": s.rounds,
                    "strategy": s.strategy,
                    "local_epochs": s.local_epochs,
                    "learning_rate": s.learning_rate,
                    "batch_size": s.batch_size,
                    "proximal_mu": s.proximal_mu,
                },
            },
        },
        "assigner": {
            "template": "openfl.component.RandomGroupedAssigner",
            "settings": {
                "task_groups": [
                    {"name": "learning", "percentage": 1.0, "tasks": ["aggregated_model_validation", "train"]}
                ]
            },
        },
        "collaborator": {
            "template": "openfl.component.Collaborator",
            # Whole models each round (no deltas): the aggregator averages weights, as FedAvg does.
            "settings": {"db_store_rounds": 1, "use_delta_updates": False, "opt_treatment": "RESET"},
        },
        "compression_pipeline": {"template": "openfl.pipelines.NoCompressionPipeline", "settings": {}},
        "data_loader": {
            "template": "fleet.app_openfl.loader.ClaimedPathDataLoader",
            "settings": {"batch_size": s.batch_size, "input_side": s.input_side},
        },
        "network": {
            "template": "openfl.federation.Network",
            "settings": {
                "agg_addr": s.address,
                "agg_port": s.port,
                "hash_salt": "auto",
                "use_tls": s.tls,
                "require_client_auth": s.tls,
                "cert_folder": "cert",
                "client_reconnect_interval": 1,
                "enable_atomic_connections": False,
                "transport_protocol": "grpc",
            },
        },
        "straggler_handling_policy": {
            "template": "fleet.app_openfl.aggregator.LeftOutPolicy",
            "settings": {
                "left_out_file": LEFT_OUT,
                "straggler_cutoff_time": s.round_timeout_seconds,
                "minimum_reporting": s.min_available_clients,
            },
        },
        "task_runner": {
            "template": "fleet.app_openfl.runner.SmallCnnTaskRunner",
            "settings": {
                "local_epochs": s.local_epochs,
                "learning_rate": s.learning_rate,
                "proximal_mu": s.proximal_mu,
                "seed": s.seed,
            },
        },
        "tasks": {
            "settings": {},
            "aggregated_model_validation": {
                "function": "validate_task",
                "kwargs": {"apply": "global", "metrics": ["accuracy"]},
            },
            "train": {"function": "train_task", "kwargs": {"epochs": 1, "metrics": ["train_loss"]}},
        },
    }


def collaborators_document(names: list[str]) -> dict[str, Any]:
    """``plan/cols.yaml``: the collaborators a round waits for, by the common names of their certificates."""
    return {"collaborators": names}


def data_document(paths: dict[str, str]) -> str:
    """``plan/data.yaml``: ``<collaborator>,<its data path>`` per line, OpenFL's format."""
    return "".join(f"{name},{path}\n" for name, path in paths.items())


def server_certificate(address: str) -> tuple[str, str]:
    """Where OpenFL's aggregator reads its certificate and key for ``address``, relative to the workspace."""
    return f"cert/server/agg_{address}.crt", f"cert/server/agg_{address}.key"


def client_certificate(name: str) -> tuple[str, str]:
    """Where OpenFL's collaborator ``name`` reads its certificate and key, relative to the workspace."""
    return f"cert/client/col_{name}.crt", f"cert/client/col_{name}.key"


TRUSTED_CA = "cert/cert_chain.crt"
