"""A job's FederatedLearning spec for the tests of the phase machine and of what drives it."""

from __future__ import annotations

import datetime

from fleet.models import FederatedLearningSpec, Images, Job, Listener, ListenerType, ModelStorage, PVCStorage
from fleet.quantity import Quantity

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def job_spec(min_clients: int = 2, rounds: int = 3, wait: int = 600) -> FederatedLearningSpec:
    job = Job(
        name="digits",
        namespace="fl",
        images=Images(server="app:1", client="app:1"),
        rounds=rounds,
        min_available_clients=min_clients,
        max_clients=3,
        dataset="digits",
        storage=ModelStorage(pvc=PVCStorage(name="model", size=Quantity("1Gi"), path="/models/digits")),
        listeners=(Listener(type=ListenerType.NODE_PORT, port=30093),),
        cluster_sets=("eu",),
        wait_timeout_seconds=wait,
    )
    return FederatedLearningSpec.from_job(job, {"clusterSets": ["eu"]})
