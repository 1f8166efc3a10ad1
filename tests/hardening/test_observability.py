"""Request ids, structured access logs, Prometheus /metrics (summed over workers) and the Lambda handler's
one EMF line per invocation."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import RunningServer
from tests.eventlib import load_event
from tests.functions.aws.conftest import load_handler  # noqa: F401  (the fixture that imports the handler afresh)
from tests.hardening.conftest import Client, tiny_request
from tests.helpers import write_tiny_artifact

# One sample line of the text exposition format: name{labels} value
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? -?[0-9.e+Inf]+$')


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-worker server that gets good requests on separate connections until both workers have
    answered some (the access log names the pid), plus 3 bad ones and 2 unknown-model ones; /metrics is
    then read until it sums every worker's counts (each writes a snapshot every second), then it stops."""
    server = RunningServer([write_tiny_artifact(tmp_path_factory.mktemp("obs") / "tiny")], env={"SLIMSERVE_WORKERS": "2"})
    answers, good = {}, 0
    try:
        for i in range(3):
            client = Client(server)
            for j in range(2):
                answers[f"good{i}{j}"] = client.request("POST", "/v2/models/tiny/infer", tiny_request(), {"x-request-id": f"req-{i}-{j}"})
                good += 1
            answers[f"bad{i}"] = client.request("POST", "/v2/models/tiny/infer", {"inputs": "nope"}, {"x-request-id": "has space"})
            client.close()
        client = Client(server)
        answers["unknown1"] = client.request("GET", "/v2/models/nosuchmodel")
        answers["unknown2"] = client.request("GET", "/v2/models/EVIL%0Aname")
        client.close()
        deadline = time.monotonic() + 60
        while len(_pids(server)) < 2:  # a new connection goes to whichever worker accepts it first
            assert time.monotonic() < deadline, "one worker took every connection"
            extra = Client(server)
            assert extra.request("POST", "/v2/models/tiny/infer", tiny_request())[0] == 200
            extra.close()
            good += 1
        while True:
            client = Client(server)
            answers["metrics"] = client.request("GET", "/metrics")
            client.close()
            if f'slimserve_requests_total{{model="tiny",version="1",code="200"}} {good}' in _text(answers["metrics"][2]):
                break
            assert time.monotonic() < deadline, "the metrics never summed both workers"
            time.sleep(0.1)
    finally:
        code, output = server.stop()
    answers["good_total"] = good
    return answers, output


def _text(body) -> str:
    return body.decode() if isinstance(body, bytes) else body


def _pids(server) -> set[int]:
    """Worker pids in the access lines so far."""
    return {int(p) for p in re.findall(r'"pid":(\d+)', server.log())}


def test_request_ids_are_echoed_or_generated(run):
    answers, _ = run
    assert answers["good00"][1]["x-request-id"] == "req-0-0"
    generated = answers["bad0"][1]["x-request-id"]
    assert generated != "has space" and re.fullmatch(r"[0-9a-f]{16}", generated)
    assert re.fullmatch(r"[0-9a-f]{16}", answers["unknown1"][1]["x-request-id"])


def test_every_request_leaves_one_json_log_line_with_id_model_and_version(run):
    answers, output = run
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "slimserve.access"]
    by_id = {line["request_id"]: line for line in access}
    good = by_id["req-1-1"]
    assert (good["method"], good["path"], good["status"], good["model"], good["version"]) == (
        "POST",
        "/v2/models/tiny/infer",
        200,
        "tiny",
        "1",
    )
    assert good["duration_ms"] > 0 and good["level"] == "INFO" and good["time"].endswith("Z")
    bad = by_id[answers["bad0"][1]["x-request-id"]]
    assert bad["status"] == 400 and bad["model"] == "tiny"
    # a path with a newline stays one escaped line; an unknown model is not a label
    unknown = by_id[answers["unknown2"][1]["x-request-id"]]
    assert unknown["status"] == 400 and unknown["model"] == "" and "\n" in unknown["path"]
    assert len({line["pid"] for line in access}) == 2  # both workers answered and logged


def test_metrics_sum_all_workers_in_prometheus_text(run):
    answers, _ = run
    status, headers, text = answers["metrics"]
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = text.decode() if isinstance(text, bytes) else text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(SAMPLE.match(line) for line in samples), [line for line in samples if not SAMPLE.match(line)]
    value = lambda prefix: sum(float(line.rsplit(" ", 1)[1]) for line in samples if line.startswith(prefix))  # noqa: E731
    assert value('slimserve_requests_total{model="tiny",version="1",code="200"}') == answers["good_total"]
    assert value('slimserve_requests_total{model="tiny",version="1",code="400"}') == 3
    assert value('slimserve_errors_total{code="400"}') == 4 and value('slimserve_errors_total{code="404"}') == 1
    total = answers["good_total"] + 3
    assert value('slimserve_request_duration_seconds_count{model="tiny",version="1"}') == total
    buckets = [
        float(line.rsplit(" ", 1)[1]) for line in samples if line.startswith('slimserve_request_duration_seconds_bucket{model="tiny"')
    ]
    assert buckets == sorted(buckets) and buckets[-1] == total  # cumulative, +Inf holds all
    assert "EVIL" not in text and "nosuchmodel" not in text


def test_lambda_handler_prints_one_emf_line_per_invocation(load_handler, tmp_path, capsys):
    handler = load_handler(SLIMSERVE_ARTIFACT=str(write_tiny_artifact(tmp_path / "tiny")), POWERTOOLS_METRICS_NAMESPACE="slimserve")
    capsys.readouterr()
    good = load_event("apigw-v2-post-json")
    missing = load_event("apigw-v2-get", path="/v2/models/nosuchmodel")
    for event in (good, missing):
        response = handler.http(event, None)
        emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
        assert len(emf) == 1, emf
        names = {m["Name"] for m in emf[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
        assert "Latency" in names and emf[0]["request_id"] == response["headers"]["x-request-id"]
        if response["statusCode"] == 200:
            assert "Succeeded" in names
        else:
            assert {"Failed", "Error404"} <= names and emf[0]["Error404"] in (1.0, [1.0])
