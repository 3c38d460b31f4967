"""The ClientApp: trains (and, when asked, evaluates) the global model on the data its cluster claims.

Reads the node config keys ``data-path`` (the claimed path, mapped locally) and ``cluster-name``. The training
settings come from the ServerApp, in each message, so that they are decided in one place.

Messages. An instruction carries ``arrays`` (an ArrayRecord with the global model's state dict, or empty in
the first round when the server does not know the input shape: then every collaborator starts from the model
`build_model` gives for the shared seed) and ``config`` (a ConfigRecord: ``server-round``, ``local-epochs``,
``learning-rate``, ``batch-size``, ``proximal-mu`` (0 for FedAvg), ``seed``). A train reply carries
``arrays``, ``metrics`` (``num-examples``, ``train_loss``, ``train-seconds``) and ``info`` (``cluster-name``,
``input-shape``); an evaluate reply carries ``metrics`` (``num-examples``, ``eval_loss``, ``accuracy``) and
``info``. Both replies' metrics also carry ``started-at`` and ``finished-at``: the Unix times at which the
handler began and built its reply (reading the data included), the collaborator's own span of the round. A
cluster whose data cannot be read replies with an error naming the path and the cluster, which the ServerApp
reports.

Imports torch, numpy and Flower's client side only: the SuperNode starts a new process for every message.
"""

from __future__ import annotations

import time
import zlib

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fleet.app.data import DataError, Dataset, load_dataset
from fleet.app.task import build_model, evaluate, train

DATA_ERROR_CODE = 1001
"""Error code of a reply whose cluster could not read its data (Flower's own codes are below 100)."""

app = ClientApp()


@app.train()
def _train(message: Message, context: Context) -> Message:
    began = time.time()
    torch.set_num_threads(1)  # collaborators on one machine share its cores; threads only add contention
    cluster = str(context.node_config.get("cluster-name", ""))
    try:
        data = _data(context)
        model = _model(message, context, data)
    except DataError as error:
        return Message(Error(DATA_ERROR_CODE, str(error)), reply_to=message)
    config = _config(message)
    started = time.perf_counter()
    loss = train(
        model,
        data,
        epochs=int(_number(config, "local-epochs")),
        learning_rate=_number(config, "learning-rate"),
        batch_size=int(_number(config, "batch-size")),
        proximal_mu=_number(config, "proximal-mu"),
        # Different shuffles per round and per cluster, the same in every run of the job: the same job on the
        # same data trains the same model (node ids are random per run, cluster names are not).
        seed=int(_number(config, "seed")) * 1_000_003 + int(_number(config, "server-round")) * 7919 + _salt(context),
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord(
                {
                    "num-examples": len(data.labels),
                    "train_loss": loss,
                    "train-seconds": time.perf_counter() - started,
                    **_span(began),
                }
            ),
            "info": ConfigRecord({"cluster-name": cluster, "input-shape": list(data.input_shape)}),
        }
    )
    return Message(content, reply_to=message)


@app.evaluate()
def _evaluate(message: Message, context: Context) -> Message:
    began = time.time()
    torch.set_num_threads(1)
    cluster = str(context.node_config.get("cluster-name", ""))
    try:
        data = _data(context)
        model = _model(message, context, data)
    except DataError as error:
        return Message(Error(DATA_ERROR_CODE, str(error)), reply_to=message)
    result = evaluate(model, data)
    content = RecordDict(
        {
            "metrics": MetricRecord(
                {
                    "num-examples": result.num_examples,
                    "eval_loss": result.loss,
                    "accuracy": result.accuracy,
                    **_span(began),
                }
            ),
            "info": ConfigRecord({"cluster-name": cluster}),
        }
    )
    return Message(content, reply_to=message)


def _span(began: float) -> dict[str, float]:
    """The handler's span in Unix time, so the ServerApp can tell its own waits from the collaborator's work."""
    return {"started-at": began, "finished-at": time.time()}


def _salt(context: Context) -> int:
    cluster = str(context.node_config.get("cluster-name", ""))
    return zlib.crc32(cluster.encode()) % 7907 if cluster else context.node_id % 7907


def _data(context: Context) -> Dataset:
    cluster = str(context.node_config.get("cluster-name", ""))
    if "data-path" not in context.node_config:
        raise DataError(f"cluster {cluster!r}: the SuperNode has no 'data-path' in its node config")
    return load_dataset(str(context.node_config["data-path"]), cluster=cluster)


def _config(message: Message) -> ConfigRecord:
    return message.content.config_records.get("config", ConfigRecord())


def _number(config: ConfigRecord, key: str, default: float | None = None) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number for {key!r} in the message's config, got {value!r}")
    return float(value)


def _model(message: Message, context: Context, data: Dataset) -> torch.nn.Module:
    model = build_model(data.input_shape, seed=int(_number(_config(message), "seed", 0)))
    arrays = message.content.array_records.get("arrays")
    if arrays is not None and len(arrays) > 0:
        try:
            model.load_state_dict(arrays.to_torch_state_dict())
        except RuntimeError as error:
            cluster = str(context.node_config.get("cluster-name", ""))
            raise DataError(
                f"cluster {cluster!r}: its images ({data.input_shape[1]}x{data.input_shape[2]}) do not fit "
                f"the global model: {error}"
            ) from None
    return model
