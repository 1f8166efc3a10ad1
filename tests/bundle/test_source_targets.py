"""GCP and Azure source folders as the platforms build them: the entry module at the root finds the adapter,
and the adapter finds `artifact/` beside `functions/`. functions-framework's own server serves the GCP folder;
the Azure folder's `function_app.py` indexes the adapter's functions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from optimizer.bundle.common import Options
from optimizer.bundle.source import build
from tests.bundle.builds import tiny_artifact
from tests.conftest import free_port, wait_for_http
from tests.tools import need, need_module

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def gcp(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gcp") / "source"
    return out, build(tiny_artifact(), out, Options(target="gcp-functions", quiet=True))


@pytest.fixture(scope="module")
def azure(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("azure") / "source"
    return out, build(tiny_artifact(), out, Options(target="azure-functions", quiet=True))


def test_gcp_folder_layout_and_pinned_requirements(gcp):
    out, report = gcp
    assert {p.name for p in out.iterdir()} >= {"main.py", "requirements.txt", "functions", "shared", "artifact"}
    requirements = (out / "requirements.txt").read_text().split()
    assert any(r.startswith("functions-framework==") for r in requirements)
    assert any(r.startswith("onnxruntime==") for r in requirements) and not any("torch" in r for r in requirements)
    parts = report["sizes"]["parts"]
    assert parts["runtime wheels"]["unzipped_bytes"] > 50 * 2**20  # what the platform installs counts
    assert report["sizes"]["unzipped_bytes"] < 500_000_000


def test_functions_framework_serves_the_folder_from_its_root_main_py(gcp):
    need("functions-framework", (BIN / "functions-framework").exists(), "install the gcp extra (make test does)")
    out, _ = gcp
    port = free_port()
    # Not PYTHONPATH either (a worktree run sets it): the folder's own functions/ and shared/ must be what runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_") and k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [str(BIN / "functions-framework"), "--source", str(out / "main.py"), "--target", "http", "--port", str(port)],
        cwd=out,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v2/health/ready", proc, timeout=60)
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.5, -1, 2, 0.25]}]})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/tiny/infer", data=body.encode(), headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["model_name"] == "tiny" and len(answer["outputs"]) == 2
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """gunicorn's master and its workers: our own process group, SIGTERM then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def test_azure_folder_indexes_the_adapter_from_its_root_function_app(azure):
    out, report = azure
    assert {p.name for p in out.iterdir()} >= {"function_app.py", "host.json", "requirements.txt", "functions", "shared", "artifact"}
    assert json.loads((out / "host.json").read_text())["version"] == "2.0"
    assert any(r.startswith("azure-functions==") for r in report["requirements"])
    need_module("azure.functions", "install the azure extra (make test does)")
    script = (
        "import sys; sys.path.insert(0, '.'); import function_app, functions.azure.function_app as a; "
        "print(sorted(f.get_function_name() for f in function_app.app.get_functions())); "
        "print(a.__file__)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=out, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names, adapter_file = proc.stdout.strip().splitlines()[-2:]
    assert "http" in names
    assert Path(adapter_file).resolve() == (out / "functions/azure/function_app.py").resolve()


def test_a_gcp_folder_of_a_fetch_delivered_artifact_fetches_its_model_from_gcs(tmp_path, monkeypatch):
    """No model in the source folder; functions-framework serves it, the weights fetched from the GCS emulator."""
    need("functions-framework", (BIN / "functions-framework").exists(), "install the gcp extra (make test does)")
    from gcp_storage_emulator.server import create_server

    from shared.storage import Storage
    from slimserve.upload import upload
    from tests.bundle.builds import write_fetch_artifact

    artifact = write_fetch_artifact(tmp_path / "big")
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="models")
    server.start()
    proc = None
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        location = upload(artifact, "gs://models/big/1", Storage(), say=lambda text: None)
        out = tmp_path / "source"
        report = build(artifact, out, Options(target="gcp-functions", quiet=True, fetch_from="gs://models/big/1"))
        assert report["artifact"]["fetch_from"] == location
        assert sorted(p.name for p in (out / "artifact").iterdir()) == ["fetch.json", "manifest.json"]
        serve_port = free_port()
        # Not PYTHONPATH either: the folder's own functions/ and shared/ must be what runs.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLIMSERVE_") and k != "PYTHONPATH"}
        env["SLIMSERVE_CACHE_DIR"] = str(tmp_path / "cache")
        proc = subprocess.Popen(
            [str(BIN / "functions-framework"), "--source", str(out / "main.py"), "--target", "http", "--port", str(serve_port)],
            cwd=out,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        wait_for_http(f"http://127.0.0.1:{serve_port}/v2/health/ready", proc, timeout=60)
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.5, -1, 2, 0.25]}]})
        request = urllib.request.Request(
            f"http://127.0.0.1:{serve_port}/v2/models/tiny/infer", data=body.encode(), headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["model_name"] == "tiny" and len(answer["outputs"]) == 2
        assert (tmp_path / "cache").is_dir() and any((tmp_path / "cache").iterdir())
    finally:
        if proc is not None:
            _stop_group(proc)
        server.stop()
