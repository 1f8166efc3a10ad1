"""The execution provider is chosen at start, logged and reported; where CUDA is absent (here: no GPU) a
request for it falls back to CPU cleanly. And the container's `serve` entry runs the endpoint."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest
from werkzeug.test import Client

from shared.boot.build import build_app
from shared.serving import local as model_module
from tests.conftest import ROOT, free_port, wait_for_http
from tests.endpoint.conftest import write_endpoint_artifact

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

pytestmark = pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA is present: these tests cover its absence")


def test_cuda_requested_where_absent_falls_back_to_cpu_with_a_warning(tiny_artifact, caplog):
    with caplog.at_level(logging.WARNING, logger="slimserve"):
        app = build_app(tiny_artifact, artifact=str(tiny_artifact), providers=f"{CUDA},{CPU}")

    assert any(CUDA in r.getMessage() and "not available" in r.getMessage() for r in caplog.records)
    client = Client(app)
    assert client.get("/v2").json["providers"] == [CPU]
    assert client.get("/v2/models/tiny").json["parameters"]["provider"] == CPU
    x = np.ones((2, 4), np.float32)
    response = client.post(
        "/v2/models/tiny/infer", json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}]}
    )
    expected = ort.InferenceSession(str(tiny_artifact / "model.onnx"), providers=[CPU]).run(["probs"], {"input": x})[0]
    probs = {o["name"]: o["data"] for o in response.json["outputs"]}["probs"]
    np.testing.assert_array_equal(np.array(probs, np.float32).reshape(2, 3), expected)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider':UserWarning")
def test_cuda_is_the_default_choice_when_onnxruntime_offers_it_and_a_silent_cpu_fallback_is_logged(tiny_artifact, caplog, monkeypatch):
    """As on a GPU image whose driver is missing: onnxruntime-gpu lists CUDA, the session runs on CPU."""
    monkeypatch.setattr(model_module.ort, "get_available_providers", lambda: [CUDA, CPU])
    assert model_module.choose_providers() == [CUDA, CPU]

    with caplog.at_level(logging.WARNING, logger="slimserve"):
        app = build_app(tiny_artifact, artifact=str(tiny_artifact))

    assert f"asked for {CUDA} but onnxruntime runs it on {CPU}" in caplog.text
    assert Client(app).get("/v2").json["providers"] == [CPU]


def _start_entry(env: dict, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "shared.server.sagemaker_entry", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_serve_entry_runs_the_model_itself_even_when_the_manifest_says_endpoint(tmp_path):
    endpoint_dir, _ = write_endpoint_artifact(tmp_path)
    port = free_port()
    proc = _start_entry({"SLIMSERVE_ARTIFACT": str(endpoint_dir), "SLIMSERVE_PROVIDERS": f"{CUDA},{CPU}"}, port)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2") as response:
            assert json.load(response)["providers"] == [CPU]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/tiny") as response:
            assert json.load(response)["parameters"]["placement"] == "function"  # it *is* the endpoint
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    log = proc.stdout.read()
    assert proc.returncode == 0
    assert f"loaded model tiny version 1 with {CPU}" in log and CUDA in log  # asked for, not available: said so


def test_serve_entry_reads_opt_ml_model_by_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SLIMSERVE_ARTIFACT"}
    proc = subprocess.run(
        [sys.executable, "-m", "shared.server.sagemaker_entry", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if os.path.exists("/opt/ml/model/manifest.json"):
        pytest.skip("this machine has a model in /opt/ml/model")
    assert proc.returncode == 1 and ("no artifact at /opt/ml/model" in proc.stderr or "/opt/ml/model: no manifest.json" in proc.stderr)
