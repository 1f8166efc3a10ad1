"""moto in server mode on a free loopback port, for tests that talk to S3/SQS over real HTTP.

    from tests.aws_local import moto_endpoint, aws  # noqa: F401  (in a conftest.py)

`moto_endpoint` (session): one server per test session, always stopped. `aws` (per test): the environment
boto3 reads (AWS_ENDPOINT_URL, dummy credentials, region) and a fresh boto3 session; every test gets its
own buckets/queues by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.conftest import free_port

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint():
    import logging

    from moto.server import ThreadedMotoServer

    # The server's per-request log lines cost as much time as moto itself, and say nothing here.
    access_log = logging.getLogger("werkzeug")
    saved_level = access_log.level
    access_log.setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        access_log.setLevel(saved_level)


@dataclass
class Aws:
    endpoint: str
    env: dict[str, str]

    def client(self, service: str):
        import boto3

        return boto3.session.Session(region_name=REGION).client(service, endpoint_url=self.endpoint)


@pytest.fixture
def aws(moto_endpoint, monkeypatch) -> Aws:
    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield Aws(moto_endpoint, env)  # shared.storage.Storage objects made in a test make their clients for it
