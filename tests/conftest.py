import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import write_tiny_artifact

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def tiny_artifact(tmp_path: Path) -> Path:
    return write_tiny_artifact(tmp_path / "tiny")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class RunningServer:
    def __init__(self, folders: list[Path], env: dict | None = None):
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "slimserve", "serve", *map(str, folders), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        wait_for_http(f"http://{self.url}/v2/health/ready", self.proc)

    def stop(self) -> tuple[int, str]:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, self.proc.stdout.read()


@pytest.fixture
def serve_artifacts():
    """Start `slimserve serve` on a free loopback port; always stopped after the test."""
    servers: list[RunningServer] = []

    def start(*folders: Path, env: dict | None = None) -> RunningServer:
        server = RunningServer(list(folders), env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
