"""Property tests of the tensor codec against a reference implementation: tritonclient's own encoder writes
the requests our decoder must read, and tritonclient's own decoder reads the responses our encoder writes,
for any tensor of any OIP datatype (FP16 and BYTES included), as JSON `data` or with the binary tensor
data extension. A bug shared by our encoder and decoder cannot pass here. The example-based tests live in
tests/shared/test_codec.py."""

from __future__ import annotations

import json

import numpy as np
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.protocol import codec
from shared.protocol.codec import InferenceResponse
from shared.protocol.datatypes import OIP_TO_NUMPY

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
    if a.dtype == object or b.dtype == object:
        raw = lambda v: v.encode("utf-8") if isinstance(v, str) else bytes(v)  # noqa: E731  (JSON BYTES read back as str)
        return a.shape == b.shape and [raw(v) for v in a.reshape(-1)] == [raw(v) for v in b.reshape(-1)]
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def no_check(name, datatype, shape) -> None:
    return None


def triton_request(items: list[tuple[str, np.ndarray]], binary: bool) -> tuple[bytes, str | None]:
    inputs = []
    for i, (datatype, value) in enumerate(items):
        tensor = triton.InferInput(f"t{i}", list(value.shape), datatype)
        tensor.set_data_from_numpy(value, binary_data=binary)
        inputs.append(tensor)
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs)
    return body, None if header_length is None else str(header_length)


@PROFILE
@given(st.lists(tensors(), min_size=1, max_size=3))
def test_we_read_what_tritonclient_writes_in_binary(items):
    body, header_length = triton_request(items, binary=True)
    decoded = codec.decode_request(body, header_length, no_check).inputs
    assert all(same(value, decoded[f"t{i}"]) for i, (_, value) in enumerate(items))


@PROFILE
@given(st.lists(tensors(text_only=True), min_size=1, max_size=3))
def test_we_read_what_tritonclient_writes_as_json(items):
    """Every datatype as JSON `data` (floats through Python's repr, which reads back exactly; NaN/Infinity
    as Python's json writes them; BYTES as text)."""
    body, header_length = triton_request(items, binary=False)
    decoded = codec.decode_request(body, header_length, no_check).inputs
    assert all(same(value, decoded[f"t{i}"]) for i, (_, value) in enumerate(items))


@PROFILE
@given(st.lists(tensors(), min_size=1, max_size=3), st.booleans())
def test_tritonclient_reads_what_we_answer(items, binary):
    if not binary:  # JSON `data` carries BYTES as text, floats as JSON numbers
        items = [(d, v) if d != "BYTES" else (d, _utf8(v)) for d, v in items]
    outputs = [(f"o{i}", value, binary) for i, (_, value) in enumerate(items)]
    payload, headers = codec.encode_response(InferenceResponse("m", "1", outputs))
    header_length = headers.get(codec.HEADER_LENGTH)
    result = triton.InferResult.from_response_body(payload, header_length=int(header_length) if header_length else None)
    for name, value, _ in outputs:
        got = result.as_numpy(name)
        if binary or value.dtype == object or value.dtype.kind in "biu":
            assert same(value, got.astype(value.dtype) if got.dtype != object and value.dtype != object else got), name
        else:  # JSON floats: the value as Python's float prints it, read back in the tensor's own dtype
            assert np.array_equal(value, got.astype(value.dtype), equal_nan=True), name


@PROFILE
@given(st.lists(tensors(), min_size=1, max_size=3))
def test_our_remote_requests_are_what_tritonclient_would_send(items):
    """The request a remote model sends (binary tensors) equals tritonclient's for the same tensors."""
    inputs = {f"t{i}": value for i, (_, value) in enumerate(items)}
    ours, our_length = codec.encode_request(inputs, binary_output=True)
    theirs, their_length = triton_request(items, binary=True)
    assert json.loads(ours[:our_length])["inputs"] == json.loads(theirs[: int(their_length)])["inputs"]
    assert ours[our_length:] == theirs[int(their_length) :]


@PROFILE
@given(tensors(datatypes=("BYTES",)))
def test_bytes_framing_is_tritons(item):
    _, value = item
    tensor = triton.InferInput("b", list(value.shape), "BYTES")
    tensor.set_data_from_numpy(value, binary_data=True)
    assert codec.serialize_bytes(value) == tensor._get_binary_data()
    assert same(value.reshape(-1), codec.deserialize_bytes(tensor._get_binary_data(), value.size))


def _utf8(value: np.ndarray) -> np.ndarray:
    out = np.empty(value.size, dtype=object)
    out[:] = [v.decode("utf-8", "replace").encode("utf-8") for v in value.reshape(-1)]
    return out.reshape(value.shape)


@PROFILE
@given(st.lists(tensors(), min_size=1, max_size=3), st.booleans())
def test_we_read_our_own_answers_as_a_remote_model_does(items, binary):
    """What a function's remote model reads from an endpoint running this server (whose answers tritonclient
    reads, above): NaN and Infinity included, which JSON answers carry as words."""
    if not binary:
        items = [(d, v) if d != "BYTES" else (d, _utf8(v)) for d, v in items]
    outputs = [(f"o{i}", value, binary) for i, (_, value) in enumerate(items)]
    payload, headers = codec.encode_response(InferenceResponse("m", "1", outputs))
    header_length = headers.get(codec.HEADER_LENGTH)
    decoded = codec.decode_response(payload, int(header_length) if header_length else None)
    for name, value, _ in outputs:
        if binary or value.dtype == object or value.dtype.kind != "f":
            assert same(value, decoded[name]), name
        else:
            assert np.array_equal(value, decoded[name].astype(value.dtype), equal_nan=True), name
