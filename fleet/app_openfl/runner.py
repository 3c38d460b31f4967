"""The task runner: fleet's small CNN (`fleet.app.task`), trained and evaluated as the Flower ClientApp does.

One call of `fleet.app.task.train` per round runs all the round's local epochs with one SGD optimizer, with the
same per-round, per-cluster seeds as the ClientApp, so both runtimes train the same way on the same data. The
model is the runner's ``model`` attribute: OpenFL names its tensors ``model.<parameter>`` (the saved ``.pbuf``).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
from openfl.federated import PyTorchTaskRunner
from openfl.utilities import Metric

from fleet.app.task import build_model, evaluate, train
from fleet.app_openfl.loader import ClaimedPathDataLoader
from fleet.hub import collaborator_user


def cluster_of(collaborator: str) -> str:
    """The cluster a collaborator name (its certificate's common name, OCM's add-on user) stands for."""
    parts = collaborator.split(":")
    if len(parts) > 3 and collaborator_user(parts[3]) == collaborator:
        return parts[3]
    return collaborator


class SmallCnnTaskRunner(PyTorchTaskRunner):
    def __init__(
        self,
        local_epochs: int = 1,
        learning_rate: float = 0.05,
        proximal_mu: float = 0.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(device="cpu", **kwargs)
        torch.set_num_threads(1)  # collaborators on one machine share its cores; threads only add contention
        loader: ClaimedPathDataLoader = self.data_loader
        self.model = build_model(loader.get_feature_shape(), seed=seed)
        self.local_epochs = local_epochs
        self.learning_rate = learning_rate
        self.proximal_mu = proximal_mu
        self.seed = seed
        self._round = 0
        self._salt = 0
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=learning_rate)  # OpenFL's interface; unused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # type: ignore[no-any-return]

    def train_task(self, col_name: str, round_num: int, input_tensor_dict: Any, **kwargs: Any) -> Any:
        self._round = round_num + 1  # OpenFL counts rounds from 0, fleet (and Flower) from 1
        cluster = cluster_of(col_name)
        self._salt = zlib.crc32(cluster.encode()) % 7907
        kwargs["epochs"] = 1  # every local epoch runs in the one call of train_ below
        return super().train_task(col_name, round_num, input_tensor_dict, **kwargs)

    def train_(self, train_dataloader: Any) -> Metric:
        dataset = self.data_loader.dataset
        loss = train(
            self.model,
            dataset,
            epochs=self.local_epochs,
            learning_rate=self.learning_rate,
            batch_size=self.data_loader.batch_size,
            proximal_mu=self.proximal_mu,
            seed=self.seed * 1_000_003 + self._round * 7919 + self._salt,
        )
        return Metric(name="train_loss", value=np.array(loss))

    def validate_(self, validation_dataloader: Any) -> Metric:
        return Metric(name="accuracy", value=np.array(evaluate(self.model, self.data_loader.dataset).accuracy))
