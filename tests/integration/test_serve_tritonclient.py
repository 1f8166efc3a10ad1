"""`slimserve serve` as a real subprocess, driven by tritonclient.http at its default settings."""

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import write_tiny_artifact


@pytest.fixture
def two_models(tmp_path):
    return write_tiny_artifact(tmp_path / "a", name="tiny"), write_tiny_artifact(tmp_path / "b", name="wide", in_features=6, classes=5)


def test_metadata_readiness_and_inference_match_onnxruntime(two_models, serve_artifacts):
    tiny, wide = two_models
    server = serve_artifacts(tiny, wide)
    client = httpclient.InferenceServerClient(server.url)

    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("wide", "1")
    assert not client.is_model_ready("missing")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("wide")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 6]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probs"]

    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    infer_input = httpclient.InferInput("input", list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)  # default: binary_data=True
    result = client.infer("wide", [infer_input])  # no outputs named: all come back binary
    expected_logits, expected_probs = ort.InferenceSession(str(wide / "model.onnx")).run(None, {"input": x})
    np.testing.assert_array_equal(result.as_numpy("logits"), expected_logits)
    np.testing.assert_array_equal(result.as_numpy("probs"), expected_probs)
    assert result.get_response()["model_name"] == "wide"

    # JSON tensors both ways, one output asked for, versioned route.
    infer_input.set_data_from_numpy(x, binary_data=False)
    result = client.infer("wide", [infer_input], model_version="1", outputs=[httpclient.InferRequestedOutput("probs", binary_data=False)])
    np.testing.assert_allclose(result.as_numpy("probs"), expected_probs, rtol=1e-6)
    assert result.as_numpy("logits") is None


def test_client_errors_reach_tritonclient_as_messages(tiny_artifact, serve_artifacts):
    server = serve_artifacts(tiny_artifact)
    client = httpclient.InferenceServerClient(server.url)
    bad = httpclient.InferInput("input", [2, 5], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 5), np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[2, 5\].*expects \[-1, 4\]"):
        client.infer("tiny", [bad])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [bad])
    wrong_type = httpclient.InferInput("input", [1, 4], "INT64")
    wrong_type.set_data_from_numpy(np.zeros((1, 4), np.int64))
    with pytest.raises(InferenceServerException, match="datatype INT64"):
        client.infer("tiny", [wrong_type])
    # The server is still healthy and answers the next good request.
    good = httpclient.InferInput("input", [1, 4], "FP32")
    good.set_data_from_numpy(np.ones((1, 4), np.float32))
    assert client.infer("tiny", [good]).as_numpy("probs").shape == (1, 3)


def test_ctrl_c_stops_the_server_cleanly(tiny_artifact, serve_artifacts):
    server = serve_artifacts(tiny_artifact)
    code, output = server.stop()
    assert code == 0, output
    assert "slimserve: stopped" in output and "Traceback" not in output


def test_tampered_artifact_is_refused_with_exit_code(tiny_artifact):
    import subprocess
    import sys

    model = tiny_artifact / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = subprocess.run(
        [sys.executable, "-m", "slimserve", "serve", str(tiny_artifact), "--port", "0"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "sha256 of model.onnx" in proc.stderr and "refusing to load" in proc.stderr
    assert "Traceback" not in proc.stderr
