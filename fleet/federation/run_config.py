"""The ServerApp's run config: the one contract between whoever starts a run and the Flower app.

Kept apart from `fleet.federation.local` so that the controller, which starts runs on the hub, imports it
without the local process machinery (psutil is not in the controller's image).
"""

from __future__ import annotations

from fleet.models import Training


def run_config(
    rounds: int,
    min_available_clients: int,
    training: Training,
    model_dir: str,
    test_data: str = "",
    seed: int = 0,
) -> dict[str, str | int | float]:
    """The ServerApp's run config: the keys of [tool.flwr.app.config] in fleet/app/pyproject.toml, the one
    contract between whoever starts a run (`fleet run`, the controller) and the app."""
    return {
        "num-rounds": rounds,
        "strategy": training.strategy.value,
        "proximal-mu": float(training.proximal_mu),
        "local-epochs": training.local_epochs,
        "learning-rate": float(training.learning_rate),
        "batch-size": training.batch_size,
        "fraction-train": float(training.fraction_train),
        "min-available-clients": min_available_clients,
        "round-timeout": training.round_timeout_seconds,
        "model-dir": model_dir,
        "test-data": test_data,
        "seed": seed,
    }
