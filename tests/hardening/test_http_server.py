"""slimserve's own HTTP/1.1 front (shared/server/httpserver.py) and its workers (shared/server/workers.py), on a live
`slimserve serve --workers 2`: keep-alive, chunked bodies, 100-continue; the framing it refuses (each then
followed by a good request); no request smuggled inside a refused body; a killed worker is replaced and
SIGTERM leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import RunningServer
from tests.hardening.conftest import tiny_request
from tests.helpers import write_tiny_artifact

BODY = json.dumps(tiny_request()).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = RunningServer([write_tiny_artifact(tmp_path_factory.mktemp("http") / "tiny")], env={"SLIMSERVE_WORKERS": "2", "SLIMSERVE_MAX_BODY_BYTES": "4096"})
    yield server
    server.stop()


def exchange(server: RunningServer, raw: bytes, wait_s: float = 10.0) -> bytes:
    """Send raw bytes on a new connection; everything the server sends until it closes (or goes quiet)."""
    host, port = server.url.split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(raw)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except socket.timeout:
            pass
    return b"".join(chunks)


def infer(body: bytes = BODY, extra: str = "", close: bool = True) -> bytes:
    head = f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def statuses(raw: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_keep_alive_serves_many_requests_on_one_connection(served):
    raw = exchange(served, infer(close=False) * 3 + infer(), wait_s=10)
    assert statuses(raw) == [200, 200, 200, 200] and raw.count(b"Connection: keep-alive") == 3


def test_chunked_body(served):
    chunked = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (BODY[:10], BODY[10:])) + b"0\r\n\r\n"
    raw = exchange(served, b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
    assert statuses(raw) == [200]


def test_expect_100_continue(served):
    host, port = served.url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(infer(extra="Expect: 100-continue\r\n")[: -len(BODY)])
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(BODY)
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")


FRAMING = {
    "content-length and chunked": (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "together"),
    "two content-lengths": (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "conflicting"),
    "negative content-length": (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "non-negative"),
    "gzip transfer coding": (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not supported"),
    "bad chunk size": (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk size"),
    "chunked body over the limit": (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n" + b"x" * 0x2000 + b"\r\n0\r\n\r\n", 413, "SLIMSERVE_MAX_BODY_BYTES"),
    "malformed request line": (b"POST /v2 HTTP/1.1 extra\r\n\r\n", 400, "malformed request line"),
    "lowercase method": (b"get /v2 HTTP/1.1\r\n\r\n", 400, "malformed request line"),
    "HTTP/2.0": (b"GET /v2 HTTP/2.0\r\n\r\n", 505, "HTTP/1.1"),
    "request line over 8 KiB": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "8 KiB"),
    "space before the colon": (b"GET /v2 HTTP/1.1\r\nHost : x\r\n\r\n", 400, "malformed header"),
    "obsolete line folding": (b"GET /v2 HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", 400, "folding"),
    "too many headers": (b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n", 431, "header lines"),
    "target not a path": (b"GET v2 HTTP/1.1\r\n\r\n", 400, "must be a path"),
}


@pytest.mark.parametrize("raw,status,message", FRAMING.values(), ids=FRAMING.keys())
def test_refused_framing_then_a_good_request(served, raw, status, message):
    answer = exchange(served, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert statuses(answer) == [status] and b"Connection: close" in head
    assert message in json.loads(body)["error"]
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
    """A body the app refused unread (413 by Content-Length) ends the connection: the request hidden in it is never parsed."""
    hidden = b"GET /v2/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n"
    first = b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + hidden + b"x" * (5000 - len(hidden))
    answer = exchange(served, first)
    assert statuses(answer) == [413]


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
        workers = _children(server.proc.pid)
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
        server.proc.wait(timeout=30)
    assert server.proc.returncode == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in now)
