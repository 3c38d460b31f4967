"""OpenFL's aggregator, writing what `fleet run` follows: the contract of the Flower ServerApp (`fleet.app.server_app`).

The plan names `ProgressAggregator` as its aggregator template, OpenFL's own way to choose the class; it is
OpenFL's `Aggregator` with one more callback (OpenFL 1.9 loads no callbacks from a plan). Into ``model_dir``:

- ``progress.jsonl``: ``started``, one ``round`` per round (participants by cluster, the clusters left out,
  metrics, seconds), then ``completed`` or ``failed``: the lines `fleet.federation.progress` reads;
- ``checkpoints/round-<n>.pt`` after each round and ``model.pt`` at the end: the round's aggregated model
  (OpenFL's numpy tensors -> torch state dict, `torch_state_dict`) as `fleet.app.task.save_model` writes it, so
  `fleet evaluate` reads an OpenFL model like a Flower one (`read_pbuf` reads OpenFL's own ``save/*.pbuf``);
- ``metrics.json``: the settings, every round and the final metrics.

And ``connected_file``: the collaborators that have asked for work, which the aggregator answers only after the
TLS handshake and its common-name check passed (how `fleet run` knows who is in).

With ``test_data`` each round's model is evaluated here on the held-out split (accuracy, loss, per digit), as the
ServerApp does; without it a round's accuracy is OpenFL's ``aggregated_model_validation`` of the round's incoming
model on the collaborators' own data, weighted by their sizes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from openfl.callbacks import Callback
from openfl.component.aggregator.aggregator import Aggregator
from openfl.component.aggregator.straggler_handling import CutoffTimePolicy
from openfl.protocols import utils

from fleet.app.data import Dataset, load_dataset
from fleet.app.files import append_event, now, write_metrics, write_text_atomically
from fleet.app.task import build_model, evaluate, save_model
from fleet.app_openfl.runner import cluster_of

MODEL_FILE = "model.pt"
CHECKPOINTS = "checkpoints"
_MODEL_PREFIX = "model."
"""OpenFL names the task runner's tensors after its ``model`` attribute."""


def torch_state_dict(tensors: Mapping[str, NDArray[Any]]) -> dict[str, torch.Tensor]:
    """An OpenFL model's tensors (``model.<parameter>``) as the torch state dict of `fleet.app.task.build_model`."""
    return {
        name.removeprefix(_MODEL_PREFIX): torch.from_numpy(np.array(value, dtype=np.float32))
        for name, value in tensors.items()
        if name.startswith(_MODEL_PREFIX)
    }


def read_pbuf(path: str | Path) -> tuple[dict[str, torch.Tensor], int]:
    """A saved OpenFL model (``save/last.pbuf``): its torch state dict and the round it holds."""
    from openfl.pipelines import NoCompressionPipeline

    tensors, round_number = utils.deconstruct_model_proto(utils.load_proto(str(path)), NoCompressionPipeline())
    return torch_state_dict(tensors), int(round_number)


class ProgressAggregator(Aggregator):
    def __init__(
        self,
        *,
        model_dir: str,
        input_side: int = 28,
        test_data: str = "",
        seed: int = 0,
        min_available_clients: int = 1,
        round_timeout: float = 600.0,
        run_settings: Mapping[str, Any] | None = None,
        connected_file: str = "",
        callbacks: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._progress = _Progress(
            self,
            Path(model_dir),
            input_side,
            load_dataset(test_data) if test_data else None,
            seed,
            {
                "min_available_clients": min_available_clients,
                "round_timeout": round_timeout,
                **(run_settings or {}),
            },
        )
        self._connected_file = Path(connected_file) if connected_file else None
        self._connected: set[str] = set()
        super().__init__(callbacks=[*(callbacks or []), self._progress], **kwargs)

    def get_tasks(self, collaborator_name: str) -> Any:
        if self._connected_file is not None and collaborator_name not in self._connected:
            self._connected.add(collaborator_name)
            write_text_atomically(self._connected_file, json.dumps(sorted(self._connected)) + "\n")
        return super().get_tasks(collaborator_name)


class _Progress(Callback):
    def __init__(
        self,
        aggregator: Aggregator,
        model_dir: Path,
        input_side: int,
        test: Dataset | None,
        seed: int,
        settings: dict[str, Any],
    ) -> None:
        super().__init__()
        self.aggregator = aggregator
        self.model_dir = model_dir
        self.input_shape = test.input_shape if test is not None else (1, input_side, input_side)
        self.test = test
        self.seed = seed
        self.settings = settings
        self.metrics: dict[str, Any] = {"settings": settings, "rounds": [], "final": {}}
        self.last: dict[str, float] = {}
        self.model: torch.nn.Module | None = None
        self.round_began = time.monotonic()
        self.ended = False

    def on_experiment_begin(self, logs: Any = None) -> None:
        if self.aggregator.round_number > 0:
            self.failed(f"the aggregator found a saved state at round {self.aggregator.round_number}: a fresh run only")
            raise RuntimeError("a fresh run must not resume an old tensor.db")
        self._event(
            {
                "event": "started",
                "rounds": self.aggregator.rounds_to_train,
                "min_available_clients": self.settings["min_available_clients"],
                "round_timeout": self.settings["round_timeout"],
            }
        )

    def on_round_begin(self, round_num: int, logs: Any = None) -> None:
        self.round_began = time.monotonic()

    def on_round_end(self, round_num: int, logs: Any = None) -> None:
        logs = logs or {}
        server_round = round_num + 1  # fleet counts rounds from 1
        model = build_model(self.input_shape, seed=self.seed)
        model.load_state_dict(torch_state_dict(self._aggregated()))
        metrics: dict[str, float] = {}
        train_loss = logs.get("aggregator/train/train_loss")
        if train_loss is not None:
            metrics["train_loss"] = float(train_loss)
        if self.test is not None:
            metrics.update(evaluate(model, self.test).metrics())
        elif "aggregator/aggregated_model_validation/accuracy" in logs:
            metrics["accuracy"] = float(logs["aggregator/aggregated_model_validation/accuracy"])
        save_model(self.model_dir / CHECKPOINTS / f"round-{server_round}.pt", model, self.input_shape)
        self.model = model
        done = sorted(cluster_of(c) for c in self.aggregator.collaborators_done)
        missing = sorted(
            cluster_of(c) for c in self.aggregator.authorized_cols if c not in self.aggregator.collaborators_done
        )
        seconds = round(time.monotonic() - self.round_began, 3)
        time_ = now()
        self.metrics["rounds"].append(
            {
                "round": server_round,
                "participants": done,
                "metrics": metrics,
                "dropped": missing,
                "seconds": {"round": seconds},
                "time": time_,
            }
        )
        self._write_metrics()
        event: dict[str, Any] = {
            "event": "round",
            "round": server_round,
            "participants": done,
            "metrics": {k: v for k, v in metrics.items() if not k.startswith("accuracy_")},
            "seconds": seconds,
        }
        if missing:
            event["dropped"] = [f"{c}: did not report within the round's cut-off" for c in missing]
            event["dropped_clusters"] = missing
        self._event(event, time_)
        self.last = metrics

    def _aggregated(self) -> dict[str, NDArray[Any]]:
        """The round's aggregated model, as the aggregator keeps it for the next round. Not ``save/last.pbuf``:
        OpenFL 1.9 writes there the model the round started from (the tensors of its round number), so after the
        last round it never holds the last aggregate."""
        aggregator = self.aggregator
        found = aggregator.tensor_db.get_tensors_by_round_and_tags(aggregator.round_number + 1, ("model",))
        return {key.tensor_name: value for key, value in found.items() if key.origin == aggregator.uuid}

    def on_experiment_end(self, logs: Any = None) -> None:
        if self.ended:
            return
        self.ended = True
        if self.aggregator.round_number < self.aggregator.rounds_to_train:
            done, planned = self.aggregator.round_number, self.aggregator.rounds_to_train
            self.failed(f"the aggregator stopped after {done} of {planned} rounds")
            return
        assert self.model is not None  # set by the last round's end
        save_model(self.model_dir / MODEL_FILE, self.model, self.input_shape)
        self.metrics["final"] = self.last
        self._write_metrics()
        self._event({"event": "completed", "metrics": self.last})

    def failed(self, reason: str) -> None:
        self.metrics["failure"] = reason
        self._write_metrics()
        self._event({"event": "failed", "reason": reason})

    def _event(self, event: dict[str, Any], time_: str | None = None) -> None:
        append_event(self.model_dir, event, time_)

    def _write_metrics(self) -> None:
        write_metrics(self.model_dir, self.metrics)


class LeftOutPolicy(CutoffTimePolicy):
    """OpenFL's CutoffTimePolicy (a round waits at most ``straggler_cutoff_time`` for a collaborator, then goes on
    with ``minimum_reporting``), and a round also ends as soon as every collaborator that `fleet run` has not left
    out reported: ``left_out_file`` lists the ones it lost (their process exited, or they never connected), so no
    round waits out the cut-off for a collaborator that cannot answer."""

    def __init__(self, left_out_file: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.left_out_file = Path(left_out_file) if left_out_file else None

    def straggler_cutoff_check(self, num_collaborators_done: int, num_all_collaborators: int) -> bool:
        if super().straggler_cutoff_check(num_collaborators_done, num_all_collaborators):
            return True
        left_out = len(_names(self.left_out_file))
        reachable = num_all_collaborators - left_out
        return left_out > 0 and num_collaborators_done >= max(reachable, self.minimum_reporting)


def _names(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(name) for name in names] if isinstance(names, list) else []
