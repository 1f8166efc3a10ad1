"""Slow clients against `slimserve serve` (defaults: a worker per CPU, 8 threads each): 96 connections that
trickle a header or a body one byte every 0.5 s hold no thread, so normal requests beside them are answered
at once; and a request still arriving after SLIMSERVE_REQUEST_TIMEOUT_S is dropped, however steadily it
trickles. Behavioural bounds (2 s for a request that takes milliseconds), not a benchmark."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from tests.conftest import RunningServer
from tests.hardening.conftest import tiny_request
from tests.helpers import write_tiny_artifact

BODY = json.dumps(tiny_request()).encode()
SLOW = 96


class Trickle:
    """`count` connections, each sending `head` at once, then one byte of `tail` every 0.5 s, from one thread."""

    def __init__(self, url: str, count: int, head: bytes, tail: bytes):
        host, port = url.split(":")
        self.socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(count)]
        for sock in self.socks:
            sock.sendall(head)
        self.tail, self.closed, self._stop = tail, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        position = 0
        while not self._stop.wait(0.5):
            byte = self.tail[position % len(self.tail) : position % len(self.tail) + 1]
            position += 1
            for sock in list(self.socks):
                try:
                    sock.sendall(byte)
                except OSError:  # the server closed it
                    self.socks.remove(sock)
                    self.closed += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def normal_requests(url: str, count: int = 5) -> list[float]:
    host, port = url.split(":")
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/v2/models/tiny/infer", BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["outputs"]
        conn.close()
        latencies.append(time.perf_counter() - started)
    return latencies


SLOW_PARTS = {
    "headers": (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 1000),
    "bodies": (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", b"[" * 1000),
}


@pytest.mark.parametrize("part", SLOW_PARTS)
def test_normal_requests_are_answered_beside_96_trickling_connections(tmp_path, part):
    server = RunningServer([write_tiny_artifact(tmp_path / "tiny")])
    trickle = Trickle(server.url, SLOW, *SLOW_PARTS[part])
    try:
        time.sleep(1.5)  # let the trickle start: every slow connection has sent a few bytes more
        latencies = normal_requests(server.url)
        print(f"slow {part}: normal request latencies (s):", [round(t, 4) for t in latencies])
        assert max(latencies) <= 2.0 and trickle.closed == 0
    finally:
        trickle.stop()
        server.stop()


def test_a_request_that_keeps_trickling_is_dropped_at_its_deadline(tmp_path):
    server = RunningServer([write_tiny_artifact(tmp_path / "tiny")], env={"SLIMSERVE_REQUEST_TIMEOUT_S": "2", "SLIMSERVE_WORKERS": "1"})
    trickle = Trickle(server.url, 4, *SLOW_PARTS["headers"])
    try:
        deadline = time.monotonic() + 20
        while trickle.closed < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert trickle.closed == 4  # each sent a byte every 0.5 s, so no idle timer would ever have fired
        assert max(normal_requests(server.url, 2)) <= 2.0
    finally:
        trickle.stop()
        server.stop()
