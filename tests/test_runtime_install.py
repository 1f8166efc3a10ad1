"""A runtime-only install: `pip install .` without extras, into a fresh venv, from the package registries.

It must serve (`slimserve serve`, the SageMaker entry point) and invoke with onnxruntime, numpy and the HTTP
server alone, and an optimizer command must say which extra it needs in one line. Every process runs from a
folder outside the checkout, so nothing is imported from the source tree by accident.

About a minute (the wheels come from the index or pip's cache): `pytest -m "not install"` skips it;
`make test` runs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port, wait_for_http
from tests.helpers import write_tiny_artifact
from tests.tools import need

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.install

# What the optimizer, the platform adapters or the tests bring; none may come with the runtime.
NOT_RUNTIME = {
    *("torch", "onnx", "onnxscript", "pyyaml", "rich", "scikit-learn", "matplotlib", "transformers", "tokenizers"),
    *("boto3", "aws-lambda-powertools", "serverless-wsgi", "functions-framework", "azure-functions", "pytest"),
}


def _source_copy(dest: Path) -> Path:
    """The files a clone has (tracked, or new and not ignored): no .venv, no build outputs."""
    listed = (
        subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    if shutil.which("git") is None:
        need("git", False, "install git: the test copies the checkout's tracked files")
    base = tmp_path_factory.mktemp("runtime-install")
    source = _source_copy(base / "src")
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    install = [str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", str(source)]
    pip = subprocess.run(install, cwd=base, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return base / "venv"


def _installed(venv: Path) -> dict[str, str]:
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    )
    return {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1] for line in freeze.stdout.split()}


def _served(cmd: list[str], url: str, cwd: Path, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_http(url, proc, timeout=60)
    except BaseException:
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


@pytest.fixture
def workdir(tmp_path) -> tuple[Path, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLIMSERVE_", "PYTHON", "VIRTUAL_ENV"))}
    env["SLIMSERVE_LOG_LEVEL"] = "WARNING"
    write_tiny_artifact(tmp_path / "tiny")
    np.save(tmp_path / "x.npy", np.arange(8, dtype=np.float32).reshape(2, 4))
    return tmp_path, env


def test_the_runtime_alone_is_installed(venv):
    installed = _installed(venv)
    assert {"slimserve", "onnxruntime", "numpy", "werkzeug", "gunicorn", "waitress"} <= set(installed)
    assert not NOT_RUNTIME & set(installed), sorted(NOT_RUNTIME & set(installed))


def test_slimserve_serve_and_invoke_work_without_extras(venv, workdir):
    folder, env = workdir
    port = free_port()
    serve = [str(venv / "bin" / "slimserve"), "serve", "tiny", "--port", str(port), "--workers", "1"]
    server = _served(serve, f"http://127.0.0.1:{port}/v2/health/ready", folder, env)
    try:
        invoke = [str(venv / "bin" / "slimserve"), "invoke", f"http://127.0.0.1:{port}", "tiny", "--npy", "x.npy"]
        invoked = subprocess.run(invoke, cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    finally:
        said = _stop(server)
    assert invoked.returncode == 0, invoked.stderr
    assert invoked.stdout.startswith("model tiny version 1\nlogits float32 [2, 3]") and "probs float32 [2, 3]" in invoked.stdout
    assert f"slimserve: serving tiny on http://127.0.0.1:{port}/v2 with 1 workers" in said


def test_the_sagemaker_entry_point_serves_without_extras(venv, workdir):
    folder, env = workdir
    port = free_port()
    env = {**env, "SLIMSERVE_ARTIFACT": str(folder / "tiny"), "SAGEMAKER_BIND_TO_PORT": str(port)}
    entry = [str(venv / "bin" / "python"), "-m", "shared.server.sagemaker_entry", "serve", "--host", "127.0.0.1"]
    server = _served(entry, f"http://127.0.0.1:{port}/ping", folder, env)
    try:
        invoke = [str(venv / "bin" / "slimserve"), "invoke", f"127.0.0.1:{port}", "tiny", "--npy", "x.npy"]
        invoked = subprocess.run(invoke, cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    finally:
        _stop(server)
    assert invoked.returncode == 0 and "logits float32 [2, 3]" in invoked.stdout, invoked.stderr


def test_an_optimizer_command_names_the_extra_it_needs(venv, workdir):
    folder, env = workdir
    optimize = [str(venv / "bin" / "slimserve"), "optimize", str(ROOT / "examples" / "digits" / "model.yaml")]
    done = subprocess.run(optimize, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 1 and line.startswith("slimserve: error: `slimserve optimize` needs ")
    assert line.endswith(", which is not installed: pip install 'slimserve[optimizer]'")
