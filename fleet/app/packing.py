"""A model's arrays as one Flower Array on the wire, and back.

Flower sends each ``Array`` of a message as two objects of its own (the array and its chunk), each one HTTPS
request per hop, and each request costs the SuperLink about 13 ms of CPU in its one process (its HTTP stack, the
node's authentication, its SQL state: `benchmarks/rounds.md`). The example's model has 8 tensors: a reply of 21
objects, pulled or pushed two at a time on each of four hops per round (ServerApp -> SuperLink -> SuperNode ->
ClientApp and back). Packed, the tensors' bytes travel as one ``Array`` (one chunk up to Flower's 5 MiB chunk
size) and the reply has 8 objects (an instruction 7, not 20).
Flower's protocol and wire format are unchanged: a packed record is an ordinary ``ArrayRecord`` of one uint8
array, with its layout (each tensor's name, dtype and shape, in order) in a ``ConfigRecord``.

The ServerApp packs an instruction's global model unless a Flower mod on the ClientApp reads its arrays
(client-side clipping); the ClientApp then packs its reply's update the same way, and the ServerApp unpacks
replies before anything else reads them. Nothing but the two ends of a message ever sees a packed record.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

ARRAYS = "arrays"
"""The record of a message's model arrays (the instruction's global model, the reply's update)."""
LAYOUT = "arrays-layout"
"""The config record whose ``layout`` describes a packed ``arrays`` record; its absence means not packed."""
_PACKED = "packed"


class PackingError(ValueError):
    """A packed record does not match its layout: the message says what was expected."""


def pack(content: RecordDict) -> RecordDict:
    """``content`` with its ``arrays`` record packed into one array (unchanged without one). An empty record is
    packed too (an empty layout): its receiver then knows to pack what it sends back."""
    arrays = content.array_records.get(ARRAYS)
    if arrays is None or LAYOUT in content.config_records:
        return content
    layout: list[list[Any]] = []
    blobs: list[bytes] = []
    for name, array in arrays.items():
        values = array.numpy()
        layout.append([name, values.dtype.str, list(values.shape)])
        blobs.append(values.tobytes(order="C"))
    packed = RecordDict(dict(content.items()))
    packed[ARRAYS] = ArrayRecord({_PACKED: Array(np.frombuffer(b"".join(blobs), dtype=np.uint8))})
    packed[LAYOUT] = ConfigRecord({"layout": json.dumps(layout)})
    return packed


def is_packed(content: RecordDict) -> bool:
    return LAYOUT in content.config_records


def unpack(content: RecordDict) -> RecordDict:
    """``content`` with a packed ``arrays`` record as the tensors it was packed from (unchanged when not packed).

    Raises `PackingError` when the packed bytes or the layout are not what packing writes."""
    if not is_packed(content):
        return content
    arrays = content.array_records.get(ARRAYS)
    if arrays is None or list(arrays.keys()) != [_PACKED]:
        raise PackingError(f"a packed message must carry one array {_PACKED!r} in its {ARRAYS!r} record")
    try:
        layout = json.loads(str(content.config_records[LAYOUT]["layout"]))
        shapes = [(str(name), np.dtype(dtype), tuple(int(n) for n in shape)) for name, dtype, shape in layout]
    except (KeyError, TypeError, ValueError) as error:
        raise PackingError(f"{LAYOUT}: expected a JSON list of [name, dtype, shape]: {error}") from None
    blob = arrays[_PACKED].numpy().tobytes()
    sizes = [dtype.itemsize * int(np.prod(shape, dtype=np.int64)) for _, dtype, shape in shapes]
    if sum(sizes) != len(blob):
        raise PackingError(f"{LAYOUT} describes {sum(sizes)} bytes, the packed array holds {len(blob)}")
    tensors: dict[str, Array] = {}
    offset = 0
    for (name, dtype, shape), size in zip(shapes, sizes, strict=True):
        values = np.frombuffer(blob, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(shape)
        tensors[name] = Array(values.copy())  # a copy: torch refuses read-only buffers
        offset += size
    unpacked = RecordDict({key: value for key, value in content.items() if key != LAYOUT})
    unpacked[ARRAYS] = ArrayRecord(tensors)
    return unpacked
