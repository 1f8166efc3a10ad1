"""Real local stand-ins for GCP: functions-framework's own server (gunicorn, as GCF runs it) serving a
bundle-shaped folder, and gcp-storage-emulator behind `STORAGE_EMULATOR_HOST`. Each server is a
subprocess on a free loopback port, started by a fixture and always stopped."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from urllib.parse import quote

import pytest

from optimizer.bundle.source import SHIMS
from tests.conftest import free_port
from tests.eventlib import EVENTS
from tests.helpers import write_tiny_artifact

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
SOURCE = "main.py"  # GCF's default source file at the source root


class Server:
    def __init__(self, cmd: list[str], port: int, cwd: Path, env: dict, log: Path):
        self.port, self.url, self.log = port, f"127.0.0.1:{port}", log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"{cmd[0]} did not listen on {port} within 30 s:\n{self.output()}") from None
                time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: gunicorn's master and its worker
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                # A worker forked after `import onnxruntime` never finishes exiting (onnxruntime 1.32);
                # gunicorn would wait out its 30 s graceful timeout and then SIGKILL it itself.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    """The GCF source folder as `slimserve bundle --target gcp-functions` lays it out: its root `main.py`
    re-exporting the adapter's targets, functions/ and shared/, the artifact in `artifact/`."""
    root = tmp_path_factory.mktemp("gcf-source")
    for name in ("functions", "shared"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _, entry, shim = SHIMS["gcp-functions"]
    (root / entry).write_text(shim, encoding="utf-8")
    write_tiny_artifact(root / "artifact", name="tiny")
    return root


@pytest.fixture(scope="module")
def start_function(bundle, tmp_path_factory):
    """`start(target, signature_type, **env)`: `functions-framework` on the bundle, no SLIMSERVE_* inherited."""
    servers: list[Server] = []
    logs = tmp_path_factory.mktemp("ff-logs")

    def start(target: str, signature_type: str = "http", **env: str) -> Server:
        port = free_port()
        # Nor PYTHONPATH (a worktree run sets it): the bundle's own functions/ and shared/ must be what runs.
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_") and k != "PYTHONPATH"}
        cmd = [
            str(BIN / "functions-framework"),
            "--target",
            target,
            "--source",
            SOURCE,
            "--signature-type",
            signature_type,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        server = Server(cmd, port, bundle, {**base, "WORKERS": "1", "THREADS": "4", **env}, logs / f"{target}-{port}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory) -> str:
    """gcp-storage-emulator in memory; yields the value for STORAGE_EMULATOR_HOST."""
    port = free_port()
    log = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    cmd = [str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    server = Server(cmd, port, log.parent, dict(os.environ), log)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@cache
def _recorded(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))


def storage_cloudevent(bucket: str, name: str, event_id: str, event_type: str | None = None) -> tuple[dict, bytes]:
    """Headers and body of a binary-mode CloudEvent as Eventarc posts it for a new GCS object,
    from `tests/events/gcs-object-finalized.json` with the bucket, name and ids moved together."""
    recorded = copy.deepcopy(_recorded("gcs-object-finalized"))
    headers, body = recorded["headers"], recorded["body"]
    headers.update(
        {"ce-id": event_id, "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}", "ce-subject": f"objects/{name}"}
    )
    if event_type:
        headers["ce-type"] = event_type
    generation, path = body["generation"], f"b/{bucket}/o/{quote(name, safe='')}"
    body.update(
        name=name,
        bucket=bucket,
        id=f"{bucket}/{name}/{generation}",
        selfLink=f"https://www.googleapis.com/storage/v1/{path}",
        mediaLink=f"https://storage.googleapis.com/download/storage/v1/{path}?generation={generation}&alt=media",
    )
    return headers, json.dumps(body).encode()
