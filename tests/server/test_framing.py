"""`slimserve serve` on its established HTTP server (gunicorn's arbiter, waitress's channels; see
shared/server/worker.py), live with `--workers 2`: keep-alive, chunked bodies, 100-continue; the framing it
refuses, each refusal followed by a good request; no request smuggled inside a refused body; a killed
worker is replaced and SIGTERM leaves no process behind; a port in use is one line, not a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, RunningServer
from tests.hardening.conftest import Client, tiny_request
from tests.helpers import write_tiny_artifact

BODY = json.dumps(tiny_request()).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = RunningServer(
        [write_tiny_artifact(tmp_path_factory.mktemp("http") / "tiny")], env={"SLIMSERVE_WORKERS": "2", "SLIMSERVE_MAX_BODY_BYTES": "4096"}
    )
    yield server
    server.stop()


def exchange(server: RunningServer, raw: bytes, wait_s: float = 10.0) -> bytes:
    """Send raw bytes on a new connection; everything the server sends until it closes (or goes quiet)."""
    host, port = server.url.split(":")
    chunks = []
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        try:
            sock.sendall(raw)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError, BrokenPipeError):  # a refusal may close before we finish sending
            pass
    return b"".join(chunks)


def infer(body: bytes = BODY, extra: str = "", close: bool = True) -> bytes:
    head = f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def statuses(raw: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


def test_keep_alive_serves_many_requests_on_one_connection(served):
    raw = exchange(served, infer(close=False) * 3 + infer(), wait_s=10)
    assert statuses(raw) == [200, 200, 200, 200]


def test_chunked_body(served):
    chunked = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (BODY[:10], BODY[10:])) + b"0\r\n\r\n"
    raw = exchange(
        served, b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked
    )
    assert statuses(raw) == [200]


def test_expect_100_continue(served):
    host, port = served.url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(infer(extra="Expect: 100-continue\r\n")[: -len(BODY)])
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(BODY)
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")


POST = b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
FRAMING = {
    "content-length and chunked": (
        POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        b"together are refused",
    ),
    "two content-lengths": (POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, b"Content-Length is invalid"),
    "negative content-length": (POST + b"Content-Length: -1\r\n\r\n", 400, b"Content-Length is invalid"),
    "superscript content-length": (POST + "Content-Length: ²\r\n\r\n".encode(), 400, b"Content-Length is invalid"),
    "signed content-length": (POST + b"Content-Length: +5\r\n\r\nhello", 400, b"Content-Length is invalid"),
    "content-length with an underscore": (POST + b"Content-Length: 1_0\r\n\r\n0123456789", 400, b"Content-Length is invalid"),
    "gzip transfer coding": (POST + b"Transfer-Encoding: gzip\r\n\r\n", 501, b"not supported"),
    "bad chunk size": (POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, b"Invalid chunk size"),
    "signed chunk size": (POST + b"Transfer-Encoding: chunked\r\n\r\n+a\r\n0123456789\r\n0\r\n\r\n", 400, b"Invalid chunk size"),
    "chunk size with an underscore": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n",
        400,
        b"Invalid chunk size",
    ),
    "content-length over the limit": (POST + b"Content-Length: 5000\r\n\r\n", 413, b"over the limit of 4096 (SLIMSERVE_MAX_BODY_BYTES)"),
    "malformed request line": (b"POST /v2 HTTP/1.1 extra\r\n\r\n", 400, b"Start line is invalid"),
    "lowercase method": (b"get /v2 HTTP/1.1\r\n\r\n", 400, b"Malformed HTTP method"),
    "space before the colon": (b"GET /v2 HTTP/1.1\r\nHost : x\r\n\r\n", 400, b"Invalid header"),
}


@pytest.mark.parametrize("raw,status,message", FRAMING.values(), ids=FRAMING.keys())
def test_refused_framing_then_a_good_request(served, raw, status, message):
    answer = exchange(served, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert statuses(answer) == [status] and message in json.loads(body)["error"].encode(), answer[:300]
    assert b"Content-Type: application/json" in head
    assert statuses(exchange(served, infer())) == [200]


def test_a_chunked_body_over_the_limit_is_cut_off_while_reading(served):
    answer = exchange(served, POST + b"Transfer-Encoding: chunked\r\n\r\n2000\r\n" + b"x" * 0x2000 + b"\r\n0\r\n\r\n")
    assert statuses(answer) in ([413], [])  # answered, or the connection reset while we were still sending
    assert statuses(exchange(served, infer())) == [200]


def test_a_header_name_with_an_underscore_is_dropped(tmp_path):
    """`X_Api_Key` must not pass for `X-Api-Key` (both are HTTP_X_API_KEY in the environ)."""
    server = RunningServer([write_tiny_artifact(tmp_path / "tiny")], env={"SLIMSERVE_WORKERS": "1", "SLIMSERVE_API_KEY": "k-123"})
    try:
        assert statuses(exchange(server, b"GET /v2 HTTP/1.1\r\nX_Api_Key: k-123\r\nConnection: close\r\n\r\n")) == [401]
        assert statuses(exchange(server, b"GET /v2 HTTP/1.1\r\nX-Api-Key: k-123\r\nConnection: close\r\n\r\n")) == [200]
    finally:
        server.stop()


def test_no_request_is_smuggled_inside_a_refused_body(served):
    """A body refused by its Content-Length ends the connection: the request hidden in it is never parsed."""
    hidden = b"GET /v2/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(served, POST + b"Content-Length: 5000\r\n\r\n" + hidden + b"x" * (5000 - len(hidden)))
    assert statuses(answer) == [413]
    smuggled = POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden
    assert statuses(exchange(served, smuggled)) == [400]  # the hidden GET after a refused one is never answered


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def test_a_killed_worker_is_replaced_and_sigterm_leaves_nothing_behind(tmp_path):
    server = RunningServer([write_tiny_artifact(tmp_path / "tiny")], env={"SLIMSERVE_WORKERS": "2"})
    try:
        deadline = time.monotonic() + 30
        while len(workers := _children(server.proc.pid)) != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2
        os.kill(next(iter(workers)), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(_children(server.proc.pid)) != 2 or _children(server.proc.pid) == workers):
            time.sleep(0.1)
        now = _children(server.proc.pid)
        assert len(now) == 2 and now != workers
        for _ in range(4):
            assert statuses(exchange(server, infer())) == [200]
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=60)
    assert server.proc.returncode == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in now)


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "slimserve", "serve", str(write_tiny_artifact(tmp_path / "tiny")), "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"slimserve: error: cannot listen on 127.0.0.1:{port}: Address already in use"]


@pytest.mark.parametrize("door", ["serve", "sagemaker"])
def test_an_unknown_log_format_is_one_line_before_anything_starts(tmp_path, door):
    artifact = write_tiny_artifact(tmp_path / "tiny")
    env = {**os.environ, "SLIMSERVE_LOG_FORMAT": "xml", "SLIMSERVE_ARTIFACT": str(artifact)}
    cmd = ["-m", "slimserve", "serve", str(artifact)] if door == "serve" else ["-m", "shared.server.sagemaker_entry", "serve"]
    proc = subprocess.run([sys.executable, *cmd, "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    prefix = "slimserve: error:" if door == "serve" else "serve: error:"
    assert proc.returncode == 1 and proc.stdout == ""  # not even "serving ...": nothing started
    assert proc.stderr.strip().splitlines() == [f"{prefix} SLIMSERVE_LOG_FORMAT='xml' must be one of json, text"]


def test_text_access_lines_carry_the_request_id_status_model_and_latency(tmp_path):
    server = RunningServer([write_tiny_artifact(tmp_path / "tiny")], env={"SLIMSERVE_LOG_FORMAT": "text", "SLIMSERVE_WORKERS": "1"})
    try:
        client = Client(server)
        status, headers, _ = client.request("POST", "/v2/models/tiny/infer", tiny_request(), {"x-request-id": "req-text-1"})
        missing = client.request("GET", "/v2/models/nosuchmodel", None, {"x-request-id": "req-text-2"})
        client.close()
    finally:
        _, output = server.stop()
    assert status == 200 and missing[0] == 404
    lines = [line for line in output.splitlines() if "slimserve.access" in line]
    good = r"^\S+ \S+ INFO slimserve\.access: POST /v2/models/tiny/infer 200 tiny/1 [0-9.]+ ms id=req-text-1$"
    assert any(re.match(good, line) for line in lines), lines
    assert any(re.search(r"GET /v2/models/nosuchmodel 404 -/- [0-9.]+ ms id=req-text-2$", line) for line in lines), lines
    assert not any(line.startswith("{") for line in output.splitlines())  # text, not JSON
