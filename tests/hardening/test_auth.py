"""API keys on `slimserve serve`: every route but health needs `Authorization: Bearer <key>` or `x-api-key`;
a missing, wrong or malformed key gets 401 with a JSON error and WWW-Authenticate, and the server answers
the next good request. Two keys in the key file (a rotation) both work. No key reaches a log line."""

from __future__ import annotations

import hmac
import subprocess
import sys

import pytest
from werkzeug.test import Client as WsgiClient

from shared.boot.build import build_app
from shared.config import Settings
from tests.conftest import ROOT, RunningServer
from tests.hardening.conftest import tiny_request
from tests.helpers import write_tiny_artifact

KEY, NEXT_KEY = "k3y-0ne-" + "a" * 24, "k3y-tw0-" + "b" * 24


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    artifact = write_tiny_artifact(folder / "tiny")
    key_file = folder / "keys"
    key_file.write_text(f"{KEY}\n{NEXT_KEY}\n")
    server = RunningServer(
        [artifact], env={"SLIMSERVE_API_KEY_FILE": str(key_file), "SLIMSERVE_WORKERS": "2", "SLIMSERVE_LOG_LEVEL": "DEBUG"}
    )
    yield server
    server.stop()


OFFENDING = {
    "no key": {},
    "wrong bearer": {"Authorization": "Bearer wrong"},
    "a prefix of the key": {"Authorization": f"Bearer {KEY[:-1]}"},
    "wrong x-api-key": {"x-api-key": "wrong"},
    "basic scheme": {"Authorization": f"Basic {KEY}"},
    "empty bearer": {"Authorization": "Bearer "},
}


@pytest.mark.parametrize("headers", OFFENDING.values(), ids=OFFENDING.keys())
@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v2/models/tiny/infer"),
        ("GET", "/v2"),
        ("GET", "/v2/models/tiny"),
        ("GET", "/metrics"),
        ("GET", "/v2/openapi.json"),
        ("POST", "/invocations"),
    ],
)
def test_offending_keys_get_401_then_a_good_request_works(served, client_for, headers, method, path):
    client = client_for(served)
    status, response_headers, body = client.request(method, path, tiny_request() if method == "POST" else None, headers)
    assert status == 401
    assert response_headers["www-authenticate"] == 'Bearer realm="slimserve"'
    assert response_headers["content-type"] == "application/json"
    assert "API key" in body["error"] and KEY not in body["error"]
    client.headers = {"Authorization": f"Bearer {KEY}"}
    client.good_inference()


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {NEXT_KEY}"}, {"x-api-key": KEY}, {"x-api-key": NEXT_KEY}],
    ids=["bearer", "bearer-lowercase-second-key", "x-api-key", "x-api-key-second-key"],
)
def test_either_header_and_either_key_of_a_rotation_is_accepted(served, client_for, headers):
    client_for(served, headers).good_inference()


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/ping"])
def test_health_routes_stay_open(served, client_for, path):
    status, _, _ = client_for(served).request("GET", path)
    assert status == 200


def test_no_key_reaches_the_logs(tmp_path):
    """Requests with the right key, a wrong one and a near miss, at DEBUG: the output holds neither key."""
    artifact = write_tiny_artifact(tmp_path / "tiny")
    server = RunningServer([artifact], env={"SLIMSERVE_API_KEY": KEY, "SLIMSERVE_WORKERS": "1", "SLIMSERVE_LOG_LEVEL": "DEBUG"})
    try:
        from tests.hardening.conftest import Client

        client = Client(server)
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}, {"Authorization": f"Bearer {KEY}x"}, {}):
            client.request("POST", "/v2/models/tiny/infer", tiny_request(), headers)
            client.request("GET", "/nowhere", None, headers)
        client.close()
    finally:
        code, output = server.stop()
    assert code == 0 and '"request_id"' in output  # the access log was on
    assert KEY[:12] not in output


def test_settings_never_show_the_key():
    settings = Settings.resolve({"SLIMSERVE_API_KEY": KEY})
    assert settings.api_key == KEY and KEY not in repr(settings) and KEY not in str(settings)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"SLIMSERVE_API_KEY": KEY, "SLIMSERVE_API_KEY_FILE": "/etc/hostname"}, "not both"),
        ({"SLIMSERVE_API_KEY_FILE": "/nonexistent/keys"}, "SLIMSERVE_API_KEY_FILE /nonexistent/keys"),
    ],
)
def test_a_key_setting_that_cannot_work_stops_the_server_with_a_message(tmp_path, env, message):
    artifact = write_tiny_artifact(tmp_path / "tiny")
    proc = subprocess.run(
        [sys.executable, "-m", "slimserve", "serve", str(artifact), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, **env},
    )
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    assert KEY not in proc.stderr


def test_every_key_is_compared_in_constant_time(tmp_path, monkeypatch):
    """hmac.compare_digest against each accepted key, no early exit: timing says nothing about which matched."""
    key_file = tmp_path / "keys"
    key_file.write_text(f"{KEY}\n{NEXT_KEY}\n")
    app = build_app(write_tiny_artifact(tmp_path / "tiny"), api_key_file=str(key_file))
    calls = []
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or a == b)
    response = WsgiClient(app).get("/v2", headers={"x-api-key": KEY})
    assert response.status_code == 200 and len(calls) == 2


def test_the_api_key_argument_wins_over_the_environment(tmp_path):
    app = build_app(write_tiny_artifact(tmp_path / "tiny"), settings=Settings.resolve({"SLIMSERVE_API_KEY": "from-env"}, api_key=KEY))
    client = WsgiClient(app)
    assert client.get("/v2", headers={"x-api-key": "from-env"}).status_code == 401
    assert client.get("/v2", headers={"x-api-key": KEY}).status_code == 200
