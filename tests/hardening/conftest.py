"""Helpers of the hardening tests: raw HTTP against a live `slimserve serve`, and requests to the tiny model."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest

from tests.conftest import RunningServer


class Client:
    """One keep-alive connection; every answer is (status, headers, body) with the JSON body decoded."""

    def __init__(self, server: RunningServer, headers: dict | None = None):
        host, port = server.url.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = headers or {}

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
        response = self.conn.getresponse()
        raw = response.read()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw
        return response.status, {k.lower(): v for k, v in response.getheaders()}, decoded

    def good_inference(self, path: str = "/v2/models/tiny/infer") -> None:
        """The server still answers a good request after whatever came before."""
        status, _, body = self.request("POST", path, tiny_request())
        assert status == 200, body
        assert np.allclose(np.sum(body["outputs"][1]["data"]), 1.0, atol=1e-5)

    def close(self) -> None:
        self.conn.close()


def tiny_request(rows: int = 1, **tensor) -> dict:
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) / 10
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 4], "data": x.reshape(-1).tolist(), **tensor}]}


@pytest.fixture
def client_for():
    clients: list[Client] = []

    def make(server: RunningServer, headers: dict | None = None) -> Client:
        clients.append(Client(server, headers))
        return clients[-1]

    yield make
    for client in clients:
        client.close()
