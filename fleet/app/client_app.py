"""The ClientApp: trains (and, when asked, evaluates) the global model on the data its cluster claims.

Reads the node config keys ``data-path`` (the claimed path, mapped locally) and ``cluster-name``. The training
settings come from the ServerApp, in each message, so that they are decided in one place.

Messages. An instruction carries ``arrays`` (an ArrayRecord with the global model's state dict, or empty in
the first round when the server does not know the input shape: then every collaborator starts from the model
`build_model` gives for the shared seed; packed into one array, `fleet.app.packing`, unless client-side
clipping reads it, and then the train reply's ``arrays`` are packed too) and ``config`` (a ConfigRecord:
``server-round``, ``local-epochs``, ``learning-rate``, ``batch-size``, ``proximal-mu`` (0 for FedAvg),
``seed``). A train reply carries
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
from collections import OrderedDict
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from fleet.app.data import DataError, Dataset, load_dataset
from fleet.app.packing import PackingError, is_packed, pack, unpack
from fleet.app.task import build_model, evaluate, train

DATA_ERROR_CODE = 1001
"""Error code of a reply whose cluster could not read its data (Flower's own codes are below 100)."""

LEGACY_PARAMETERS = "fitins.parameters"
"""Where a SecAgg+ instruction (Flower's legacy FitIns) carries the global model."""

app = ClientApp()


def _privacy_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's mods for what the instruction asks: SecAgg+ for its four stages (it masks the update before
    it leaves), or under client-side differential privacy the clipping mod for the norm the aggregator sent
    (the update is clipped here, before it leaves)."""
    if RECORD_KEY_CONFIGS in message.content.config_records:
        return secaggplus_mod(message, context, call_next)
    config = message.content.config_records.get("config")
    if config is not None and KEY_CLIPPING_NORM in config:
        mod = adaptiveclipping_mod if config.get("dp-clipping") == "adaptive" else fixedclipping_mod
        return mod(message, context, call_next)
    return call_next(message, context)


@app.train(mods=[_privacy_mod])
def _train(message: Message, context: Context) -> Message:
    began = time.time()
    torch.set_num_threads(1)  # collaborators on one machine share its cores; threads only add contention
    cluster = str(context.node_config.get("cluster-name", ""))
    legacy = LEGACY_PARAMETERS in message.content.array_records
    try:
        data = _data(context)
        model = _legacy_model(message, context, data) if legacy else _model(message, context, data)
    except DataError as error:
        return Message(Error(DATA_ERROR_CODE, str(error)), reply_to=message)
    config = _legacy_config(message) if legacy else _config(message)
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
    if legacy:
        return Message(_fitres(model, data, cluster, loss, time.perf_counter() - started, began), reply_to=message)
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
    # Packed when the instruction was (`fleet.app.packing`): then no Flower mod reads the update's arrays here.
    return Message(pack(content) if is_packed(message.content) else content, reply_to=message)


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
            "info": ConfigRecord({"cluster-name": cluster, "input-shape": list(data.input_shape)}),
        }
    )
    return Message(content, reply_to=message)


def _fitres(
    model: torch.nn.Module, data: Dataset, cluster: str, loss: float, seconds: float, began: float
) -> RecordDict:
    """A SecAgg+ train reply: Flower's legacy FitRes (which secaggplus_mod masks and then empties) weighing 1
    (`fleet.app.secure_aggregation.WEIGHT`), and ``info`` as in a plain reply."""
    arrays = [value.detach().cpu().numpy() for value in model.state_dict().values()]
    metrics = {"train_loss": loss, "train-seconds": seconds, "num-examples": len(data.labels), **_span(began)}
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), 1, metrics)  # type: ignore[arg-type]
    content = compat.fitres_to_recorddict(fitres, keep_input=True)
    content["info"] = ConfigRecord({"cluster-name": cluster, "input-shape": list(data.input_shape)})
    return content


def _legacy_config(message: Message) -> ConfigRecord:
    """The settings of a SecAgg+ instruction (Flower's legacy FitIns config)."""
    config: dict[str, Any] = dict(compat.recorddict_to_fitins(message.content, True).config)
    return ConfigRecord(config)


def _legacy_model(message: Message, context: Context, data: Dataset) -> torch.nn.Module:
    """The global model of a SecAgg+ instruction: Flower's legacy Parameters, the state dict's values in order."""
    fitins = compat.recorddict_to_fitins(message.content, True)
    model = build_model(data.input_shape, seed=int(_number(_legacy_config(message), "seed", 0)))
    arrays = parameters_to_ndarrays(fitins.parameters) if fitins.parameters.tensors else []
    if arrays:
        keys = list(model.state_dict().keys())
        if len(keys) != len(arrays):
            raise DataError(
                f"cluster {context.node_config.get('cluster-name', '')!r}: the global model has {len(arrays)} "
                f"arrays, its images ({data.input_shape[1]}x{data.input_shape[2]}) give a model of {len(keys)}"
            )
        try:
            model.load_state_dict(
                OrderedDict((k, torch.from_numpy(v.copy())) for k, v in zip(keys, arrays, strict=True))
            )
        except RuntimeError as error:
            raise DataError(f"cluster {context.node_config.get('cluster-name', '')!r}: {error}") from None
    return model


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
    cluster = str(context.node_config.get("cluster-name", ""))
    try:
        arrays = unpack(message.content).array_records.get("arrays")
    except PackingError as error:
        raise DataError(f"cluster {cluster!r}: the global model could not be unpacked: {error}") from None
    if arrays is not None and len(arrays) > 0:
        try:
            model.load_state_dict(arrays.to_torch_state_dict())
        except RuntimeError as error:
            raise DataError(
                f"cluster {cluster!r}: its images ({data.input_shape[1]}x{data.input_shape[2]}) do not fit "
                f"the global model: {error}"
            ) from None
    return model
