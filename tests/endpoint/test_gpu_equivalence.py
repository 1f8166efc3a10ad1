"""Where onnxruntime-gpu finds a GPU, the endpoint's CUDA answers match its CPU answers within fp32 tolerance.

Skipped where CUDA is absent (the CPU-only development machines and CI): there, test_providers_and_entry.py
covers the fallback. On a machine with an NVIDIA GPU, `make test-gpu` builds `.venv-gpu` with onnxruntime-gpu in
place of onnxruntime and runs this file with SLIMSERVE_TESTS_REQUIRE_GPU=1, under which a missing CUDA
provider fails instead of skipping.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from werkzeug.test import Client

from shared.boot.build import build_app
from tests.helpers import write_tiny_artifact

CUDA = "CUDAExecutionProvider"


@pytest.fixture(autouse=True)
def _cuda():
    if CUDA in ort.get_available_providers():
        return
    message = f"no CUDA execution provider here (onnxruntime {ort.__version__}, providers {ort.get_available_providers()})"
    if __import__("os").environ.get("SLIMSERVE_TESTS_REQUIRE_GPU") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def test_cuda_answers_match_cpu_within_fp32_tolerance(tmp_path):
    folder = write_tiny_artifact(tmp_path / "wide", in_features=256, classes=64)
    x = np.random.default_rng(0).normal(size=(32, 256)).astype(np.float32)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}

    gpu = Client(build_app(folder, artifact=str(folder), placement="function"))
    assert gpu.get("/v2").json["providers"] == [CUDA]  # chosen by default where present
    answer = {
        o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in gpu.post("/v2/models/tiny/infer", json=body).json["outputs"]
    }

    cpu = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, probs = cpu.run(["logits", "probs"], {"input": x})
    np.testing.assert_allclose(answer["logits"], logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(answer["probs"], probs, rtol=1e-4, atol=1e-6)
    assert (answer["probs"].argmax(1) == probs.argmax(1)).all()
