"""Batch inputs and results on object storage: bytes <-> checked requests, through the data plane.

    .npy    one array, for a model with one input
    .npz    arrays keyed by input name
    .json   an Open Inference Protocol v2 infer request body
    .jsonl  one text per line, a JSON string or {"text": ...}, for a model with one BYTES input

Every format ends in the data plane's checks (signature, limits, NaN policy, outputs), with the batch
limits: `.npy`/`.npz` headers are read and their shapes checked before any data is decoded or a member
inflated (shared/protocol/npy.py), JSON is depth-checked before it is parsed.

Results are an OIP v2 response body (`.json`) or the outputs keyed by name (`.npz`). Both are a pure
function of the input and the model, so a redelivered record rewrites the same bytes.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from shared.errors import RecordError
from shared.protocol import codec, jsontext
from shared.protocol.codec import InferenceRequest, InferenceResponse
from shared.protocol.limits import Limits
from shared.protocol.npy import read_npy, read_npz
from shared.serving import signature
from shared.serving.dataplane import DataPlane
from shared.serving.interface import ServedModel

INPUT_FORMATS = (".npy", ".npz", ".json", ".jsonl")
# A fixed timestamp inside .npz results: zip entries otherwise carry the time they were written.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def input_format(name: str) -> str:
    lowered = name.lower()
    for suffix in sorted(INPUT_FORMATS, key=len, reverse=True):
        if lowered.endswith(suffix):
            return suffix
    raise RecordError(f"{name[:200]!r}: unsupported input format; expected one of {', '.join(INPUT_FORMATS)}")


def decode(name: str, data: bytes, model: ServedModel, plane: DataPlane, limits: Limits) -> InferenceRequest:
    """The record as a request the data plane has checked against the model and `limits`."""
    fmt = input_format(name)
    if fmt == ".json":
        return plane.decode(model, data, None, limits)
    if fmt == ".npz":  # each member's header is checked against the signature before any is inflated
        check = lambda key, datatype, shape: signature.check_input(model.manifest, key, datatype, shape)  # noqa: E731
        return plane.from_arrays(model, read_npz(data, limits, name, check), limits)
    spec = _only_input(model, fmt)
    if fmt == ".jsonl":
        value = _texts(name, data, model, limits)
    else:
        value = read_npy(
            data, limits, name, check=lambda _, datatype, shape: signature.check_input(model.manifest, spec.name, datatype, shape)
        )
    return plane.from_arrays(model, {spec.name: value}, limits)


def encode(fmt: str, response: InferenceResponse, source: str) -> bytes:
    if fmt == "npz":
        return _npz({name: value for name, value, _ in response.outputs})
    if response.id is None:
        response.id = source
    response.parameters = {**response.parameters, "source": source}
    body, _ = codec.encode_response(response)
    return body


def _only_input(model: ServedModel, fmt: str):
    inputs = model.manifest.inputs
    if len(inputs) != 1:
        names = ", ".join(s.name for s in inputs)
        raise RecordError(f"a {fmt} input holds one tensor; model {model.name!r} has inputs {names}: use .npz or .json")
    return inputs[0]


def _texts(name: str, data: bytes, model: ServedModel, limits: Limits) -> np.ndarray:
    spec = model.manifest.inputs[0]
    if spec.datatype != "BYTES":
        raise RecordError(f"a .jsonl input holds texts; input {spec.name!r} of model {model.name!r} takes {spec.datatype}")
    texts: list[bytes] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        item = jsontext.loads(line, 2, f"{name!r} line {number}")
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise RecordError(f'{name!r} line {number} must be a JSON string or {{"text": "..."}}')
        try:
            texts.append(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON but no text
            raise RecordError(f"{name!r} line {number} is not valid Unicode text") from None
        limits.check_shape(spec.name, (len(texts),))
    if not texts:
        raise RecordError(f"{name!r} holds no texts")
    value = np.empty(len(texts), dtype=object)
    value[:] = texts
    # A text input is [batch] or [batch, 1]; anything wider is not "one text per line".
    if len(spec.shape) == 2 and spec.shape[1] in (1, -1):
        return value.reshape(-1, 1)
    if len(spec.shape) != 1:
        raise RecordError(f"input {spec.name!r} of model {model.name!r} has shape {list(spec.shape)}; .jsonl fills [n] or [n, 1]")
    return value


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            if value.dtype == object:  # BYTES: saved as str, so readers need no pickle
                value = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]).reshape(
                    value.shape
                )
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entry.getvalue())
    return buffer.getvalue()
