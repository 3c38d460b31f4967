"""The ServerApp's run config: the one contract between whoever starts a run and the Flower app.

Kept apart from `fleet.federation.local` so that the controller, which starts runs on the hub, imports it
without the local process machinery (psutil is not in the controller's image).
"""

from __future__ import annotations

from fleet.app.resume import resume_run_config
from fleet.models import Privacy, Training


def run_config(
    rounds: int,
    min_available_clients: int,
    training: Training,
    model_dir: str,
    test_data: str = "",
    seed: int = 0,
    privacy: Privacy | None = None,
    population: int = 0,
) -> dict[str, str | int | float]:
    """The ServerApp's run config: the keys of [tool.flwr.app.config] in fleet/app/pyproject.toml, the one
    contract between whoever starts a run (`fleet run`, the controller) and the app. ``population``: how many
    collaborators the job may have (its maxClients), which the privacy accountant reports against."""
    config: dict[str, str | int | float] = {
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
    # A fresh run; a resumed one overrides these (`fleet.app.resume`).
    return config | _privacy_config(privacy, max(population, min_available_clients)) | resume_run_config(None)


def _privacy_config(privacy: Privacy | None, population: int) -> dict[str, str | int | float]:
    """The ``dp-*`` and ``secagg-*`` keys, all of them always (the app's keys, exactly); a noise multiplier or a
    share count of 0 turns that option off."""
    dp = privacy.differential_privacy if privacy is not None else None
    secure = privacy.secure_aggregation if privacy is not None else None
    return {
        "population": population,
        "dp-side": dp.side.value if dp else "server",
        "dp-clipping": dp.clipping.value if dp else "fixed",
        "dp-noise-multiplier": float(dp.noise_multiplier) if dp else 0.0,
        "dp-clipping-norm": float(dp.clipping_norm) if dp else 1.0,
        "dp-target-clipped-quantile": float(dp.target_clipped_quantile) if dp else 0.5,
        "dp-clip-norm-learning-rate": float(dp.clip_norm_learning_rate) if dp else 0.2,
        "dp-clipped-count-stddev": float(dp.clipped_count_stddev or 0.0) if dp else 0.0,
        "dp-target-delta": float(dp.target_delta) if dp else 1e-5,
        "dp-epsilon": float(dp.epsilon or 0.0) if dp else 0.0,
        "secagg-shares": secure.shares if secure else 0,
        "secagg-reconstruction-threshold": secure.reconstruction_threshold if secure else 0,
    }
