"""Differential privacy of the aggregate, with Flower's own pieces: its DP strategy wrappers clip the updates
(server-side) or check the collaborators' clipping (client-side, ``fixedclipping_mod``/``adaptiveclipping_mod``)
and add the Gaussian noise; its RDP accountant (``flwr[dp]``, Google's dp-accounting) keeps the budget.

The ServerApp drives its own rounds (`fleet.app.server_app`), so it calls the wrappers' aggregation only: a
wrapper is made per round for the number of updates actually aggregated (the noise's standard deviation is
``noise_multiplier * clipping_norm / n``), and the accounting is done here, with the accountant's public API,
the way Flower's wrappers do it (one Gaussian release per round, no amplification by sampling, updates
averaged with equal weights; training and evaluation metrics are not covered).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, Message
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
)
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    PrivacySpent,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

EQUAL_WEIGHT = "dp-weight"
"""The metric every update is weighted by under DP: 1 each (Flower accounts only for an equally weighted mean)."""


class PrivacyError(Exception):
    """The round cannot be released privately; the message is the reason the run fails with."""


@dataclass(frozen=True)
class DifferentialPrivacySettings:
    """The ``dp-*`` run config keys (`fleet.federation.run_config`)."""

    side: str
    clipping: str
    noise_multiplier: float
    clipping_norm: float
    target_clipped_quantile: float
    clip_norm_learning_rate: float
    target_delta: float
    clipped_count_stddev: float | None
    epsilon: float | None
    population: int

    @property
    def accounted(self) -> bool:
        return self.clipping == "fixed"


@dataclass(frozen=True)
class Spent:
    """The privacy spent so far: epsilon at delta, over ``releases`` noisy aggregates."""

    epsilon: float
    delta: float
    releases: int
    budget: float | None

    def metrics(self) -> dict[str, float]:
        return {"epsilon": self.epsilon, "delta": self.delta}


class DifferentialPrivacy:
    """One run's differential privacy: the clipping norm across rounds (adaptive clipping moves it) and the
    accountant."""

    def __init__(self, settings: DifferentialPrivacySettings) -> None:
        self.settings = settings
        self.clipping_norm = settings.clipping_norm
        self._accountant: RdpAccountant | None = None
        if settings.accounted:
            self._accountant = RdpAccountant(
                PrivacyConfig(
                    target_delta=settings.target_delta,
                    population_size=settings.population,
                    neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                    sampling_method=SamplingMethod.NO_AMPLIFICATION,
                    max_epsilon=settings.epsilon,
                )
            )

    @property
    def client_side(self) -> bool:
        return self.settings.side == "client"

    def instruction(self) -> dict[str, float | str]:
        """What the train instruction's config carries: under client-side clipping, the norm the collaborators'
        clipping mod clips to and which of Flower's mods (fixed or adaptive) to clip with."""
        if not self.client_side:
            return {}
        return {KEY_CLIPPING_NORM: self.clipping_norm, "dp-clipping": self.settings.clipping}

    def check_budget(self, server_round: int, updates: int) -> None:
        """Before a round is pushed: refuse it when its release would take epsilon past the budget."""
        if self._accountant is None or self.settings.epsilon is None:
            return
        if self._accountant.would_exceed(self._event(updates)):
            spent = self.spent()
            assert spent is not None
            raise PrivacyError(
                f"round {server_round}: the privacy budget would be exceeded: after {spent.releases} round(s) "
                f"epsilon {spent.epsilon:.4g} (delta {spent.delta:g}) is spent, and one more noisy aggregate "
                f"(noise multiplier {self.settings.noise_multiplier:g}) would take it past the budget "
                f"{self.settings.epsilon:g}; the run stops before it"
            )

    def aggregate(self, server_round: int, current: ArrayRecord, replies: list[Message]) -> ArrayRecord:
        """The noisy mean of the replies' ``arrays`` (clipped here, or checked clipped by the collaborators),
        from Flower's wrapper; accounted as one release."""
        for reply in replies:
            reply.content.metric_records["metrics"][EQUAL_WEIGHT] = 1
        wrapper = self._wrapper(len(replies))
        if isinstance(
            wrapper, DifferentialPrivacyServerSideFixedClipping | DifferentialPrivacyServerSideAdaptiveClipping
        ):
            wrapper.current_arrays = current
        arrays, _ = wrapper.aggregate_train(server_round, replies)
        if arrays is None:
            raise PrivacyError(f"round {server_round}: Flower's DP wrapper aggregated nothing (see the ServerApp log)")
        self.clipping_norm = float(wrapper.clipping_norm)
        if self._accountant is not None:
            self._accountant.compose(self._event(len(replies)))
        return arrays

    def spent(self) -> Spent | None:
        """The privacy spent so far, or None without an accountant (adaptive clipping)."""
        if self._accountant is None:
            return None
        spent: PrivacySpent = self._accountant.get_privacy_spent()
        return Spent(spent.epsilon, spent.delta, spent.num_releases, self.settings.epsilon)

    def describe(self) -> dict[str, Any]:
        """The settings as the model card and metrics.json show them."""
        settings = self.settings
        described: dict[str, Any] = {
            "side": settings.side,
            "clipping": settings.clipping,
            "noise_multiplier": settings.noise_multiplier,
            "clipping_norm": settings.clipping_norm,
            "target_delta": settings.target_delta,
            "epsilon_budget": settings.epsilon,
            "accountant": "rdp (flwr[dp], no amplification by sampling)" if settings.accounted else None,
        }
        if settings.clipping == "adaptive":
            described.update(
                target_clipped_quantile=settings.target_clipped_quantile,
                clip_norm_learning_rate=settings.clip_norm_learning_rate,
                clipped_count_stddev=settings.clipped_count_stddev,
                final_clipping_norm=self.clipping_norm,
            )
        return described

    def _event(self, updates: int) -> GaussianPrivacyEvent:
        return GaussianPrivacyEvent(
            noise_multiplier=self.settings.noise_multiplier,
            sample_size=updates,
            population_size=self.settings.population,
        )

    def _wrapper(
        self, updates: int
    ) -> (
        DifferentialPrivacyServerSideFixedClipping
        | DifferentialPrivacyClientSideFixedClipping
        | DifferentialPrivacyServerSideAdaptiveClipping
        | DifferentialPrivacyClientSideAdaptiveClipping
    ):
        settings = self.settings
        inner = FedAvg(weighted_by_key=EQUAL_WEIGHT, arrayrecord_key="arrays", configrecord_key="config")
        if settings.clipping == "fixed":
            fixed = (
                DifferentialPrivacyClientSideFixedClipping
                if self.client_side
                else DifferentialPrivacyServerSideFixedClipping
            )
            return fixed(inner, settings.noise_multiplier, self.clipping_norm, updates)
        adaptive = (
            DifferentialPrivacyClientSideAdaptiveClipping
            if self.client_side
            else DifferentialPrivacyServerSideAdaptiveClipping
        )
        return adaptive(
            inner,
            settings.noise_multiplier,
            updates,
            initial_clipping_norm=self.clipping_norm,
            target_clipped_quantile=settings.target_clipped_quantile,
            clip_norm_lr=settings.clip_norm_learning_rate,
            clipped_count_stddev=settings.clipped_count_stddev,
        )


def settings_from_run_config(config: Mapping[str, Any]) -> DifferentialPrivacySettings | None:
    """The DP settings in a run config, or None when ``dp-noise-multiplier`` is 0 or absent (no DP)."""
    noise = float(config.get("dp-noise-multiplier", 0.0))
    if noise <= 0:
        return None
    epsilon = float(config.get("dp-epsilon", 0.0))
    return DifferentialPrivacySettings(
        side=str(config.get("dp-side", "server")),
        clipping=str(config.get("dp-clipping", "fixed")),
        noise_multiplier=noise,
        clipping_norm=float(config.get("dp-clipping-norm", 1.0)),
        target_clipped_quantile=float(config.get("dp-target-clipped-quantile", 0.5)),
        clip_norm_learning_rate=float(config.get("dp-clip-norm-learning-rate", 0.2)),
        clipped_count_stddev=float(config.get("dp-clipped-count-stddev", 0.0)) or None,
        target_delta=float(config.get("dp-target-delta", 1e-5)),
        epsilon=epsilon if epsilon > 0 else None,
        population=int(config.get("population", 1)),
    )
