"""Property tests of the tensor codec: any tensor of any OIP datatype survives the trip through JSON `data`
and through the binary tensor data extension, requests and responses alike (FP16 and BYTES included).
The example-based tests live in tests/shared/test_codec.py."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.protocol import codec
from shared.protocol.codec import InferenceResponse
from shared.protocol.datatypes import OIP_TO_NUMPY

NUMERIC = [name for name in OIP_TO_NUMPY if name != "BYTES"]
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tensors(draw, datatypes=tuple(OIP_TO_NUMPY), text_only: bool = False) -> tuple[str, np.ndarray]:
    datatype = draw(st.sampled_from(datatypes))
    shape = draw(SHAPES)
    if datatype == "BYTES":
        element = st.text(max_size=8).map(lambda s: s.encode("utf-8")) if text_only else st.binary(max_size=8)
        flat = draw(st.lists(element, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return datatype, array.reshape(shape)
    return datatype, draw(hnp.arrays(OIP_TO_NUMPY[datatype], shape))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object:
        return a.shape == b.shape and list(a.reshape(-1)) == list(b.reshape(-1))
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def no_check(name, datatype, shape) -> None:
    return None


@PROFILE
@given(st.lists(tensors(), min_size=1, max_size=3))
def test_binary_request_round_trip(items):
    inputs = {f"t{i}": value for i, (_, value) in enumerate(items)}
    body, header_length = codec.encode_request(inputs)
    decoded = codec.decode_request(body, str(header_length), no_check).inputs
    assert list(decoded) == list(inputs) and all(same(inputs[n], decoded[n]) for n in inputs)


@PROFILE
@given(st.lists(tensors(text_only=True), min_size=1, max_size=3))
def test_json_request_round_trip(items):
    """`data` as the nested lists a JSON client writes (NaN/Infinity as Python's json writes them)."""
    raw_inputs, expected = [], {}
    for i, (datatype, value) in enumerate(items):
        data = [v.decode("utf-8") for v in value.reshape(-1)] if datatype == "BYTES" else value.tolist()
        raw_inputs.append({"name": f"t{i}", "datatype": datatype, "shape": list(value.shape), "data": data})
        expected[f"t{i}"] = value
    body = json.dumps({"inputs": raw_inputs}).encode()
    decoded = codec.decode_request(body, None, no_check).inputs
    assert all(same(expected[n], decoded[n]) for n in expected)


@PROFILE
@given(st.lists(tensors(), min_size=1, max_size=3), st.booleans())
def test_response_round_trip_binary_or_json(items, binary):
    if not binary:  # JSON `data` carries BYTES as text
        items = [(d, v) if d != "BYTES" else (d, _utf8(v)) for d, v in items]
    outputs = [(f"o{i}", value, binary) for i, (_, value) in enumerate(items)]
    payload, headers = codec.encode_response(InferenceResponse("m", "1", outputs))
    header_length = headers.get(codec.HEADER_LENGTH)
    decoded = codec.decode_response(payload, int(header_length) if header_length else None)
    for name, value, _ in outputs:
        assert same(value, decoded[name]), name


@PROFILE
@given(tensors(datatypes=("BYTES",)))
def test_bytes_framing_round_trip(item):
    _, value = item
    raw = codec.serialize_bytes(value)
    assert same(value.reshape(-1), codec.deserialize_bytes(raw, value.size))


def _utf8(value: np.ndarray) -> np.ndarray:
    out = np.empty(value.size, dtype=object)
    out[:] = [v.decode("utf-8", "replace").encode("utf-8") for v in value.reshape(-1)]
    return out.reshape(value.shape)
