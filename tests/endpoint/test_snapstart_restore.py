"""The SnapStart hook on a real endpoint-placed model: a breaker opened before the snapshot (its clock is
time.monotonic(), which does not carry across a restore) is replaced, so the next request after a restore
reaches the endpoint instead of being short-circuited."""

from __future__ import annotations

import numpy as np

from shared.boot import snapstart
from shared.remote.model import RemoteModel
from tests.endpoint.conftest import function_runtime, write_endpoint_artifact


def test_a_breaker_opened_before_the_snapshot_lets_the_next_request_reach_the_endpoint(endpoint, tmp_path):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path)
    server = endpoint(endpoint_dir)
    runtime = function_runtime(function_dir, server.url, breaker_failures=1, breaker_cooldown_s=3600)
    model = runtime.plane.model("tiny")
    assert isinstance(model, RemoteModel)
    x = {"input": np.ones((1, 4), np.float32)}

    server.faults.mode = "5xx"
    model.answer(x)  # fails, falls back, and opens the breaker for an hour
    assert model.breaker.state == "open"
    server.faults.mode = "ok"
    seen = server.faults.seen
    _, parameters = model.answer(x)
    assert parameters.get("degraded") and server.faults.seen == seen  # short-circuited: the endpoint saw nothing

    snapstart.after_restore(runtime)

    _, parameters = model.answer(x)
    assert not parameters and server.faults.seen == seen + 1 and model.breaker.state == "closed"
