"""Resuming a run whose aggregator died, from its last round checkpoint.

Flower 1.41 cannot hand a run over to a new ServerApp: a ServerApp task that stops sending heartbeats is failed
by the SuperLink after about 60 s ("No heartbeat received from the task"), and with it the run. So a run is
resumed as a new run of the same job that starts where the lost one left off: its run config names the last
checkpoint the lost run wrote (``checkpoints/round-<n>.pt``) and the first round to run, ``n + 1``; the ServerApp
starts from those weights and appends to the same ``progress.jsonl`` and ``metrics.json``. The rounds before
``n + 1`` are not trained again, and the model is the one an uninterrupted run would have trained (each round
is a function of the weights it starts from and of the round's number).

Both sides use this module: whoever resumes (`fleet run`) asks `resume_point` for the checkpoint and writes
`resume_run_config`; the ServerApp reads it back with `ResumePoint.from_run_config`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESUME_FROM = "resume-from"
"""Run config: the checkpoint to start from; empty for a fresh run."""
FIRST_ROUND = "first-round"
"""Run config: the first round to run (1 for a fresh run)."""
CHECKPOINTS = "checkpoints"
_CHECKPOINT = re.compile(r"round-([1-9][0-9]*)\.pt")


class ResumeError(Exception):
    """The run config asks to resume from a checkpoint that cannot be used."""


@dataclass(frozen=True)
class ResumePoint:
    checkpoint: Path
    first_round: int

    @property
    def last_round(self) -> int:
        """The round whose checkpoint this is: the last one the lost run completed."""
        return self.first_round - 1

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> ResumePoint | None:
        """The resume point `resume_run_config` wrote, or None for a fresh run; `ResumeError` when bad."""
        checkpoint = str(config.get(RESUME_FROM, "") or "")
        if not checkpoint:
            return None
        first = config.get(FIRST_ROUND, 0)
        if isinstance(first, bool) or not isinstance(first, int) or first < 2:
            raise ResumeError(f"run config {FIRST_ROUND!r}: expected a round of at least 2 to resume, got {first!r}")
        if not Path(checkpoint).is_file():
            raise ResumeError(f"run config {RESUME_FROM!r}: expected a checkpoint file, {checkpoint} is not one")
        return cls(Path(checkpoint), first)

    def weights(self) -> tuple[OrderedDict[str, Any], tuple[int, int, int]]:
        """The checkpoint's weights (numpy arrays by parameter name) and the input shape it was trained for."""
        from fleet.app.task import ModelError, load_model

        try:
            model, input_shape = load_model(self.checkpoint)
        except ModelError as error:
            raise ResumeError(f"cannot resume from round {self.last_round}: {error}") from None
        return OrderedDict((k, v.detach().numpy().copy()) for k, v in model.state_dict().items()), input_shape


def resume_point(model_dir: Path) -> ResumePoint | None:
    """The last round checkpoint under ``model_dir``, as the point to resume from; None when there is none."""
    folder = model_dir / CHECKPOINTS
    rounds = [int(m.group(1)) for p in folder.glob("round-*.pt") if (m := _CHECKPOINT.fullmatch(p.name))]
    if not rounds:
        return None
    last = max(rounds)
    return ResumePoint(folder / f"round-{last}.pt", last + 1)


def resume_run_config(point: ResumePoint | None) -> dict[str, str | int]:
    """The run config keys that make a run start at ``point`` (a fresh run with None)."""
    if point is None:
        return {RESUME_FROM: "", FIRST_ROUND: 1}
    return {RESUME_FROM: str(point.checkpoint), FIRST_ROUND: point.first_round}


__all__ = [
    "CHECKPOINTS",
    "FIRST_ROUND",
    "RESUME_FROM",
    "ResumeError",
    "ResumePoint",
    "resume_point",
    "resume_run_config",
]
