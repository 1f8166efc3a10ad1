"""serverless-offline (npm) serving the HTTP function locally: `osls offline start` with
serverless.offline.yml, the handler run by the venv's python, answering real HTTP on loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from shared.client import InferenceClient
from tests.bundle.builds import write_text_artifact
from tests.conftest import ROOT, free_port, wait_for_http
from tests.helpers import write_tiny_artifact
from tests.tools import need

OSLS = ROOT / "node_modules" / ".bin" / "osls"
PLUGIN = ROOT / "node_modules" / "serverless-offline"


@pytest.fixture(autouse=True, scope="module")  # before the module-scoped server it guards
def _serverless_offline():
    need("serverless-offline (node_modules)", OSLS.exists() and PLUGIN.exists(), "run `npm ci` (make test does), which needs node")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("offline")
    artifact = write_tiny_artifact(folder / "tiny")
    words = write_text_artifact(folder / "words", task="embedding")  # for /v1/embeddings
    port = free_port()
    env = {
        **os.environ,
        "VIRTUAL_ENV": sys.prefix,  # serverless-offline puts its bin/ first on PATH for `python3`
        "SLIMSERVE_ARTIFACT": f"{artifact},{words}",
        "OFFLINE_HTTP_PORT": str(port),
        "OFFLINE_LAMBDA_PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [str(OSLS), "offline", "start", "--config", "serverless.offline.yml"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v2/health/live", proc, timeout=90)
        yield f"http://127.0.0.1:{port}", artifact
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # node and the python handler it spawned
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_offline_serves_the_http_function(offline):
    url, artifact = offline
    import onnxruntime as ort

    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    client = InferenceClient(url)
    assert client.metadata("tiny")["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    got = client.infer("tiny", {"input": x}).outputs["probs"]
    want = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"]).run(["probs"], {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_offline_passes_errors_through(offline):
    from shared.client import InvokeError

    url, _ = offline
    with pytest.raises(InvokeError, match="404 Not Found: unknown model 'nope'"):
        InferenceClient(url).infer("nope", {"input": np.zeros((1, 4), np.float32)})


def test_offline_routes_v1_to_the_openai_compatible_embeddings(offline):
    import openai

    url, _ = offline
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="a-jwt", max_retries=0)  # noAuth: the authorizer is not emulated
    assert [m.id for m in client.models.list()] == ["words"]
    answer = client.embeddings.create(model="words", input=["hello world", "world"])
    assert [d.embedding for d in answer.data] == [[2.5], [1.5]] and answer.usage.total_tokens == 3
    with pytest.raises(openai.BadRequestError, match="'dimensions' is 4"):
        client.embeddings.create(model="words", input="hello", dimensions=4)
