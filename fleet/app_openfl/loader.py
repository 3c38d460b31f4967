"""The collaborator's data: what its cluster claims, at the path ``plan/data.yaml`` gives it, and nothing else.

OpenFL hands each collaborator's data loader the path listed for it in ``plan/data.yaml``; `fleet run` lists
there the cluster's claimed dataset path (mapped under the local data root), so a collaborator reads only its own
cluster's partition, in any format `fleet.app.data.load_dataset` reads. Without a path (OpenFL's ``fx plan
initialize`` builds the model from a loader with none) only the input shape is known, from the plan.
"""

from __future__ import annotations

from typing import Any

from openfl.federated import PyTorchDataLoader

from fleet.app.data import Dataset, load_dataset
from fleet.app.task import as_tensors


class ClaimedPathDataLoader(PyTorchDataLoader):
    """Trains on the whole partition and validates on it too, as the Flower ClientApp does."""

    def __init__(
        self, data_path: str | None = None, batch_size: int = 32, input_side: int = 28, cluster: str = "", **kwargs: Any
    ) -> None:
        super().__init__(batch_size, **kwargs)
        self.feature_shape = [1, input_side, input_side]
        self.dataset: Dataset | None = None
        if data_path is None:
            return
        self.dataset = load_dataset(data_path, cluster=cluster)
        images, labels = as_tensors(self.dataset)
        self.feature_shape = list(self.dataset.input_shape)
        self.X_train, self.y_train = images.numpy(), labels.numpy()
        self.X_valid, self.y_valid = self.X_train, self.y_train

    def get_feature_shape(self) -> list[int]:
        return self.feature_shape

    def get_num_classes(self) -> int:
        return 10
