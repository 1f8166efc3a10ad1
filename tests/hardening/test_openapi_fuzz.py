"""schemathesis against a live `slimserve serve` (127.0.0.1), driven by the server's own /v2/openapi.json:
valid and invalid requests for every operation, with and without the API key, several hundred in all.
Every answer must be no 5xx, have a documented status and content type, match its schema and carry the
documented headers."""

from __future__ import annotations

import json
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.bundle.builds import write_text_artifact
from tests.conftest import RunningServer
from tests.hardening.models import write_echo_artifact
from tests.helpers import write_tiny_artifact

KEY = "fuzz-key-0123456789abcdef"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, response_headers_conformance]
PER_OPERATION = {GenerationMode.POSITIVE: 22, GenerationMode.NEGATIVE: 22}
WITHOUT_KEY = 4
MINIMUM_TOTAL = 500


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    words = write_text_artifact(folder / "words", task="embedding")  # /v1/embeddings answers too, not only errs
    running = RunningServer(
        [write_tiny_artifact(folder / "tiny"), write_echo_artifact(folder / "echo"), words],
        env={"SLIMSERVE_API_KEY": KEY, "SLIMSERVE_WORKERS": "2", "SLIMSERVE_LOG_LEVEL": "WARNING"},
    )
    yield running
    code, output = running.stop()
    assert "Traceback" not in output, output[-3000:]


def test_the_spec_is_served_and_describes_every_route(server):
    request = urllib.request.Request(f"http://{server.url}/v2/openapi.json", headers={"x-api-key": KEY})
    doc = json.load(urllib.request.urlopen(request))
    assert doc["openapi"].startswith("3.0")
    assert {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
        "/ping",
        "/invocations",
        "/metrics",
        "/v2/openapi.json",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{model_id}",
    } <= set(doc["paths"])
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server):
    base = f"http://{server.url}"
    schema = schemathesis.openapi.from_dict(
        json.load(urllib.request.urlopen(urllib.request.Request(f"{base}/v2/openapi.json", headers={"x-api-key": KEY})))
    )
    calls: list[str] = []
    failures: list[str] = []

    def run(operation, mode, count: int, headers: dict) -> None:
        @settings(
            max_examples=count,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy(generation_mode=mode))
        def probe(case):
            calls.append(operation.label)
            try:
                case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=30)
            except Exception as exc:  # collected, so one run reports every failing operation
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:600]}")

        try:
            probe()
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body): negative mode has no case
            assert mode is GenerationMode.NEGATIVE
        for strategy in operation.get_strategies_from_examples():  # the spec's own examples: requests that work
            settings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))(
                given(strategy)(probe.hypothesis.inner_test)
            )()

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, count in PER_OPERATION.items():
            run(operation, mode, count, {"x-api-key": KEY})
        run(operation, GenerationMode.POSITIVE, WITHOUT_KEY, {})

    print(f"schemathesis: {len(calls)} examples over {len(set(calls))} operations, {len(failures)} failures")
    assert not failures, "\n".join(failures[:10])
    assert len(calls) >= MINIMUM_TOTAL
