"""Fixtures of the endpoint tests: dummy AWS credentials, artifacts split between endpoint and function,
and the real endpoint app on a loopback port behind the fault injector."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import onnx
import pytest

from shared.artifact.loading import file_entries, load_artifact, write_manifest
from shared.boot.build import build_app, start
from tests.endpoint.faults import LoopbackServer
from tests.functions.aws.conftest import load_handler  # noqa: F401  (the fixture, re-used as is)
from tests.helpers import linear_softmax_onnx, write_tiny_artifact

ENDPOINT_NAME = "tiny-ep"

# Retries and breaker small enough that a test walks the breaker's states in a second.
BREAKER = dict(endpoint_retries=2, endpoint_backoff_s=0.05, endpoint_backoff_cap_s=0.2, breaker_failures=3, breaker_cooldown_s=0.5)
# Healthy calls get generous timeouts: a loaded CI machine may take a second to answer, and that is no fault.
HEALTHY = dict(endpoint_connect_timeout_s=5.0, endpoint_read_timeout_s=30.0, endpoint_deadline_s=60.0, **BREAKER)
# Tight budgets only where a slow or dead endpoint is injected, so every fault resolves in well under a
# second; the bounds those tests assert derive from these.
FAST = dict(endpoint_connect_timeout_s=0.5, endpoint_read_timeout_s=0.4, endpoint_deadline_s=1.5, **BREAKER)


@pytest.fixture(autouse=True)
def aws_env():
    """Dummy credentials and a region, and nothing from the machine's own AWS configuration."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )


def write_endpoint_artifact(folder: Path, fallback: bool = True) -> tuple[Path, Path]:
    """(endpoint_dir, function_dir) of one `placement: endpoint` artifact.

    The endpoint holds everything; the function lacks model.onnx (its weights stay on the endpoint) and,
    with `fallback`, carries `fallback.onnx`: other weights, so a degraded answer is told apart by value.
    """
    endpoint_dir = write_tiny_artifact(folder / "endpoint")
    names = ["model.onnx"]
    extra = {}
    if fallback:
        onnx.save(linear_softmax_onnx(seed=1), endpoint_dir / "fallback.onnx")
        names.append("fallback.onnx")
        extra = {"fallback": {"model_file": "fallback.onnx", "candidate": "int8-static"}}
    manifest = load_artifact(endpoint_dir).manifest
    write_manifest(endpoint_dir, replace(manifest, files=file_entries(endpoint_dir, names), placement="endpoint", extra=extra))
    function_dir = folder / "function"
    shutil.copytree(endpoint_dir, function_dir, ignore=shutil.ignore_patterns("model.onnx"))
    return endpoint_dir, function_dir


@pytest.fixture
def endpoint():
    """`start(artifact_dir, **settings)`: the endpoint app (models run here) on a loopback port."""
    servers: list[LoopbackServer] = []

    def start(folder: Path, **overrides) -> LoopbackServer:
        server = LoopbackServer(build_app(folder, artifact=str(folder), placement="function", sagemaker_runtime=True, **overrides))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def function_runtime(folder: Path, sagemaker_url: str, **overrides):
    """The function's runtime (what every adapter starts), its endpoint reached by boto3 at `sagemaker_url`."""
    os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = sagemaker_url
    return start(folder, artifact=str(folder), **{**HEALTHY, "endpoint_name": ENDPOINT_NAME, **overrides})


def function_app(folder: Path, sagemaker_url: str, **overrides):
    """The function's app (what every adapter wraps), its endpoint reached by boto3 at `sagemaker_url`."""
    return function_runtime(folder, sagemaker_url, **overrides).app
