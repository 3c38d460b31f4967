"""ClientApp: reads the cluster's data path from the node config, as fleet's ClientApp does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    cluster = str(context.node_config["cluster-name"])
    path = Path(str(context.node_config["data-path"]))
    if not path.is_dir():
        raise FileNotFoundError(f"collaborator {cluster}: data path {path} does not exist")
    files = len(list(path.iterdir()))
    content = RecordDict(
        {
            "identity": ConfigRecord({"cluster": cluster}),
            # A model update of 16 float32s, so that the aggregator has bytes to count.
            "arrays": ArrayRecord([np.full(16, files, dtype=np.float32)]),
            "metrics": MetricRecord({"files": files, "num-examples": 1}),
        }
    )
    return Message(content, reply_to=message)
