import json

import numpy as np
import pytest
import tritonclient.http as httpclient

from shared.errors import InvalidTensor, MalformedRequest
from shared.protocol import codec
from shared.protocol.codec import InferenceResponse
from shared.protocol.datatypes import OIP_TO_NUMPY

SAMPLES = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], np.uint8),
    "UINT16": np.array([[0, 7, 65535]], np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 7, 2**40]], np.uint64),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-5, 0, 5]], np.int16),
    "INT32": np.array([[-5, 0, 2**31 - 1]], np.int32),
    "INT64": np.array([[-(2**40), 0, 2**40]], np.int64),
    "FP16": np.array([[0.5, -1.25, 65504]], np.float16),
    "FP32": np.array([[0.1, -2.5, 3e38]], np.float32),
    "FP64": np.array([[0.1, -2.5, 1e300]], np.float64),
    "BYTES": np.array([[b"hello", "héllo".encode(), b""]], dtype=object),
}


def accept_all(name, datatype, shape):
    return None


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
@pytest.mark.parametrize("binary", [True, False])
def test_request_round_trip_through_tritonclient_encoder(datatype, binary):
    value = SAMPLES[datatype]
    tensor = httpclient.InferInput("x", list(value.shape), datatype)
    tensor.set_data_from_numpy(value, binary_data=binary)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    request = codec.decode_request(body, None if json_size is None else str(json_size), accept_all)
    decoded = request.inputs["x"]
    assert decoded.shape == value.shape
    assert decoded.dtype == OIP_TO_NUMPY[datatype]
    assert decoded.tolist() == value.tolist()


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
@pytest.mark.parametrize("binary", [True, False])
def test_response_round_trip_through_tritonclient_decoder(datatype, binary):
    value = SAMPLES[datatype]
    body, headers = codec.encode_response(InferenceResponse("m", "1", [("y", value, binary)], id="r1"))
    length = headers.get(codec.HEADER_LENGTH)
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=None if length is None else int(length))
    out = result.as_numpy("y")
    if datatype == "BYTES":
        assert [v if isinstance(v, bytes) else v.encode() for v in out.reshape(-1)] == list(value.reshape(-1))
    else:
        assert out.dtype == value.dtype and out.tolist() == value.tolist()
    assert result.get_response()["id"] == "r1"
    assert headers["Content-Type"] == ("application/octet-stream" if binary else "application/json")


def _decode(doc, binary=b"", header=None):
    body = json.dumps(doc).encode() + binary
    return codec.decode_request(body, header, accept_all)


def _input(**kw):
    base = {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}
    base.update(kw)
    return {"inputs": [base]}


def test_json_nested_and_flat_data_are_the_same():
    nested = _decode(_input()).inputs["x"]
    flat = _decode(_input(data=[1, 2, 3, 4])).inputs["x"]
    np.testing.assert_array_equal(nested, flat)


@pytest.mark.parametrize(
    "doc, error, message",
    [
        (_input(data=[1, 2, 3]), InvalidTensor, "needs 4 elements, got 3"),
        (_input(data=[[1, 2], [3]]), InvalidTensor, "not a regular nested list"),
        (_input(data=["1", "2", "3", "4"]), InvalidTensor, "not FP32"),
        (_input(datatype="INT8", data=[1, 2, 3, 300]), InvalidTensor, "out of range for INT8"),
        (_input(datatype="INT32", data=[1.5, 2, 3, 4]), InvalidTensor, "not INT32"),
        (_input(datatype="FP99"), InvalidTensor, "unknown datatype 'FP99'"),
        (_input(shape=[2, -2]), InvalidTensor, "non-negative integers"),
        (_input(shape="2x2"), InvalidTensor, "non-negative integers"),
        (_input(name=""), MalformedRequest, "'name' must be a non-empty string"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, MalformedRequest, "neither 'data' nor"),
        ({"inputs": []}, MalformedRequest, "non-empty 'inputs'"),
        ({"inputs": [_input()["inputs"][0], _input()["inputs"][0]]}, InvalidTensor, "more than once"),
        ({**_input(), "outputs": "all"}, MalformedRequest, "'outputs' must be a list"),
        (_input(datatype="BYTES", shape=[1], data=[3]), InvalidTensor, "must hold strings"),
    ],
)
def test_bad_json_tensors_are_named(doc, error, message):
    with pytest.raises(error, match=message):
        _decode(doc)


def test_binary_framing_errors():
    header = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}
    head = json.dumps(header).encode()
    ok = codec.decode_request(head + np.array([1, 2], np.float32).tobytes(), str(len(head)), accept_all)
    assert ok.inputs["x"].tolist() == [1.0, 2.0]
    with pytest.raises(MalformedRequest, match="runs past"):
        codec.decode_request(head + b"\0" * 4, str(len(head)), accept_all)
    with pytest.raises(MalformedRequest, match="not claimed"):
        codec.decode_request(head + b"\0" * 12, str(len(head)), accept_all)
    with pytest.raises(MalformedRequest, match="must be an integer"):
        codec.decode_request(head, "twelve", accept_all)
    with pytest.raises(MalformedRequest, match="body holds"):
        codec.decode_request(head, str(len(head) + 1), accept_all)
    header["inputs"][0]["parameters"]["binary_data_size"] = 6
    head = json.dumps(header).encode()
    with pytest.raises(InvalidTensor, match="needs 8 bytes, got 6"):
        codec.decode_request(head + b"\0" * 6, str(len(head)), accept_all)


def test_bytes_framing_errors():
    with pytest.raises(InvalidTensor, match="ends after 1 of 2"):
        codec.deserialize_bytes(codec.serialize_bytes(np.array([b"a"], dtype=object)), 2)
    with pytest.raises(InvalidTensor, match="past the end"):
        codec.deserialize_bytes(b"\xff\0\0\0ab", 1)
    with pytest.raises(InvalidTensor, match="bytes left"):
        codec.deserialize_bytes(codec.serialize_bytes(np.array([b"a", b"b"], dtype=object)), 1)
