"""Fault injection against the real endpoint server: every fault is answered within the deadline (degraded
when a local variant exists, else 503 + Retry-After); the breaker opens, keeps calls off, and recovers.

The counts and times each case measured are printed (`pytest -s`) for the issue note.
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import pytest
from werkzeug.test import Client

from shared.remote.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from tests.conftest import free_port
from tests.endpoint.conftest import FAST, function_app, write_endpoint_artifact

X = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
BODY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": X.ravel().tolist()}]}
DEADLINE = FAST["endpoint_deadline_s"]


def probs(model_path) -> np.ndarray:
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(["probs"], {"input": X})[0]


def answer(app) -> tuple[object, float]:
    started = time.monotonic()
    response = Client(app).post("/v2/models/tiny/infer", json=BODY)
    return response, time.monotonic() - started


def cooled_down(model, timeout_s: float = 30.0) -> None:
    """Until the breaker's cool-down is over (polled, not slept: a loaded machine may be slower)."""
    deadline = time.monotonic() + timeout_s
    while model.breaker.retry_after_s() > 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def probs_of(response) -> np.ndarray:
    out = {o["name"]: o for o in response.json["outputs"]}["probs"]
    return np.array(out["data"], np.float32).reshape(out["shape"])


# fault -> endpoint attempts one request makes: only throttling and 5xx are retried (1 + 2 retries)
FAULTS = {"down": 1, "slow": 1, "5xx": 3, "throttle": 3, "model-500": 3}


@pytest.mark.parametrize("fallback", [True, False], ids=["with-fallback", "no-fallback"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_fault_is_answered_within_the_deadline(tmp_path, endpoint, fault, fallback):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path, fallback=fallback)
    server = endpoint(endpoint_dir)
    url = f"http://127.0.0.1:{free_port()}" if fault == "down" else server.url  # nothing listens there
    server.faults.mode, server.faults.delay_s = fault, 1.0
    app = function_app(function_dir, url, **FAST)
    model = app.plane.repository.get("tiny")

    response, elapsed = answer(app)

    assert elapsed < DEADLINE, f"{fault}: answered after {elapsed:.3f}s, deadline {DEADLINE}s"
    if fault == "slow":
        assert elapsed >= FAST["endpoint_read_timeout_s"]  # it did wait for the read timeout, then gave up
    attempts = FAULTS[fault]
    assert model.stats.attempts == attempts and model.stats.retries == attempts - 1
    assert server.faults.seen == (0 if fault == "down" else attempts)
    assert sum(model.stats.failures.values()) == 1 and model.breaker.state == CLOSED  # 1 of 3 to open
    if fallback:
        assert response.status_code == 200
        assert response.json["parameters"] == {"degraded": True, "served_by": "function"}
        np.testing.assert_array_equal(probs_of(response), probs(endpoint_dir / "fallback.onnx"))
        assert not np.array_equal(probs_of(response), probs(endpoint_dir / "model.onnx"))
    else:
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert "unavailable" in response.json["error"] and "no local variant" in response.json["error"]
    print(
        f"\n[fault] {fault:9s} fallback={fallback!s:5s} -> {response.status_code} in {elapsed * 1000:6.1f} ms; "
        f"attempts={model.stats.attempts} retries={model.stats.retries} endpoint_saw={server.faults.seen} "
        f"failures={model.stats.failures}"
    )


def test_a_4xx_from_the_endpoint_is_the_callers_fault_never_retried_never_degraded(tmp_path, endpoint):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path, fallback=True)
    server = endpoint(endpoint_dir)
    server.faults.mode = "reject"
    app = function_app(function_dir, server.url)
    model = app.plane.repository.get("tiny")

    response, elapsed = answer(app)

    assert response.status_code == 400 and "out of the model's range" in response.json["error"]
    assert server.faults.seen == 1 and model.stats.retries == 0 and model.stats.degraded == 0
    assert model.breaker.state == CLOSED and model.breaker.transitions == []


def test_breaker_opens_keeps_calls_off_the_endpoint_and_recovers_through_a_probe(tmp_path, endpoint):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path, fallback=True)
    server = endpoint(endpoint_dir)
    server.faults.mode = "5xx"
    app = function_app(function_dir, server.url)
    model = app.plane.repository.get("tiny")
    attempts_per_request = 1 + FAST["endpoint_retries"]

    for _ in range(FAST["breaker_failures"]):
        assert answer(app)[0].json["parameters"]["degraded"] is True
    assert model.breaker.state == OPEN
    assert server.faults.seen == FAST["breaker_failures"] * attempts_per_request

    for _ in range(5):  # open: answered locally, the endpoint never sees them
        response, _ = answer(app)
        assert response.json["parameters"]["degraded"] is True
    assert server.faults.seen == FAST["breaker_failures"] * attempts_per_request
    assert model.stats.short_circuited == 5

    cooled_down(model)  # half-open: one probe; the endpoint still fails, so open again
    assert answer(app)[0].json["parameters"]["degraded"] is True
    assert model.breaker.state == OPEN
    seen_after_failed_probe = server.faults.seen
    assert seen_after_failed_probe == (FAST["breaker_failures"] + 1) * attempts_per_request

    server.faults.mode = "ok"
    assert answer(app)[0].json["parameters"]["degraded"] is True  # still cooling down: not even tried
    assert server.faults.seen == seen_after_failed_probe
    cooled_down(model)
    response, _ = answer(app)  # the probe succeeds: closed, full answers again
    assert response.status_code == 200 and "parameters" not in response.json
    np.testing.assert_array_equal(probs_of(response), probs(endpoint_dir / "model.onnx"))
    assert model.breaker.state == CLOSED and server.faults.seen == seen_after_failed_probe + 1
    assert model.breaker.transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    print(f"\n[breaker] endpoint_saw={server.faults.seen} stats={model.stats} transitions={model.breaker.transitions}")


def test_open_breaker_without_fallback_says_when_to_retry(tmp_path, endpoint):
    _, function_dir = write_endpoint_artifact(tmp_path, fallback=False)
    server = endpoint(tmp_path / "endpoint")
    server.faults.mode = "5xx"
    app = function_app(function_dir, server.url, breaker_failures=1, breaker_cooldown_s=30.0)

    first, _ = answer(app)
    second, _ = answer(app)

    assert first.status_code == second.status_code == 503
    assert 29 <= int(second.headers["Retry-After"]) <= 30  # the rest of the cool-down
    assert server.faults.seen == 1 + FAST["endpoint_retries"]  # the second request never reached it


def test_half_open_lets_exactly_one_probe_through():
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown_s=10.0, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.allow() and breaker.state == CLOSED
    breaker.record_failure()
    assert not breaker.allow() and breaker.retry_after_s() == 10.0
    now[0] = 10.0
    assert breaker.allow() and breaker.state == HALF_OPEN  # the probe
    assert not breaker.allow() and not breaker.allow()  # everyone else, while it is in flight
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.allow()


def test_retries_stop_when_the_next_would_overrun_the_deadline(tmp_path, endpoint):
    endpoint_dir, function_dir = write_endpoint_artifact(tmp_path, fallback=True)
    server = endpoint(endpoint_dir)
    server.faults.mode = "throttle"
    # one attempt may take connect 0.5 + read 0.4 s, the whole deadline: after a failure no retry fits.
    app = function_app(function_dir, server.url, **{**FAST, "endpoint_deadline_s": 0.9, "endpoint_retries": 5})
    model = app.plane.repository.get("tiny")

    response, elapsed = answer(app)

    assert response.json["parameters"]["degraded"] is True and elapsed < 0.9
    assert model.stats.attempts == 1 and server.faults.seen == 1
