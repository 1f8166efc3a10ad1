"""The half-open probe always settles the breaker, whatever ends it. An endpoint that answers a tensor no
numpy can make (shape [0, 2**64]) once left the probe flag set, and that process never called the
endpoint again; now the probe counts as a failure, the breaker opens again, and once the endpoint answers
properly the next probe closes it."""

from __future__ import annotations

import json
import time

import numpy as np
from werkzeug.wrappers import Response

from tests.endpoint.conftest import function_runtime, write_endpoint_artifact
from tests.endpoint.faults import LoopbackServer

GOOD = {
    "model_name": "tiny",
    "model_version": "1",
    "outputs": [
        {"name": "logits", "datatype": "FP32", "shape": [1, 3], "data": [0.0, 1.0, 2.0]},
        {"name": "probs", "datatype": "FP32", "shape": [1, 3], "data": [0.2, 0.3, 0.5]},
    ],
}
HOSTILE = {
    "model_name": "tiny",
    "outputs": [
        {"name": "logits", "datatype": "FP32", "shape": [0, 2**64], "data": []},
        {"name": "probs", "datatype": "FP32", "shape": [0, 2**64], "data": []},
    ],
}


class Endpoint:
    answer = HOSTILE

    def __call__(self, environ, start_response):
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        return Response(json.dumps(self.answer), mimetype="application/json")(environ, start_response)


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_probe_that_ends_in_anything_settles_the_breaker(tmp_path):
    _, function_dir = write_endpoint_artifact(tmp_path)
    app = Endpoint()
    server = LoopbackServer(app)
    try:
        runtime = function_runtime(
            function_dir,
            "http://unused",
            endpoint_transport="http",
            endpoint_url=server.url,
            breaker_failures=1,
            breaker_cooldown_s=0.2,
            endpoint_retries=0,
        )
        model = runtime.plane.model("tiny")
        x = {"input": np.ones((1, 4), np.float32)}

        _, parameters = model.answer(x)
        assert parameters["degraded"] and model.breaker.state == "open"
        wait_for(lambda: model.breaker.retry_after_s() == 0)
        seen = server.faults.seen
        _, parameters = model.answer(x)  # the half-open probe: the hostile answer again
        assert parameters["degraded"] and server.faults.seen == seen + 1 and model.breaker.state == "open"

        app.answer = GOOD
        wait_for(lambda: model.breaker.retry_after_s() == 0)
        outputs, parameters = model.answer(x)
        assert not parameters and model.breaker.state == "closed"
        np.testing.assert_allclose(outputs["probs"], [[0.2, 0.3, 0.5]])
    finally:
        server.stop()
