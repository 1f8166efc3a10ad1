import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import write_tiny_artifact
from tests.tools import need

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


# session scope: checked before any module-scoped fixture that would start osls (and fail unnamed)
@pytest.fixture(scope="session")
def osls_cli():
    need(
        "osls (node_modules/.bin/osls)",
        (ROOT / "node_modules" / ".bin" / "osls").exists(),
        "run `npm ci` (make test does), which needs node",
    )


@pytest.fixture
def python312():
    from tests.bundle.builds import NO_PYTHON312, PYTHON312

    need("python3.12", PYTHON312 is not None, NO_PYTHON312 + " (pyenv install 3.12)")
    return PYTHON312


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
        import tempfile

        self._log = tempfile.NamedTemporaryFile(prefix="slimserve-serve-", suffix=".log", delete=False)  # readable while it runs
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for_http(f"http://{self.url}/v2/health/ready", self.proc, timeout=60.0)
        except (RuntimeError, TimeoutError) as exc:
            raise type(exc)(f"{exc}\n{self.log()}") from None

    def log(self) -> str:
        """What the server has printed so far (stdout and stderr)."""
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> tuple[int, str]:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:  # stop() may run twice: the test's, then the fixture's
            self._output = self.log()
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
        return self.proc.returncode, self._output


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
