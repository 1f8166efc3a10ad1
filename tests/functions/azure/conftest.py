"""Fixtures of the Azure adapter's tests: the function app imported afresh, its decorated functions called
directly (Azure Functions Core Tools cannot be installed here), and Azurite (npm) as Blob and Queue storage,
started on free loopback ports and always stopped."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.tools import need

ROOT = Path(__file__).resolve().parents[3]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
FUNCTION_APP = "functions.azure.function_app"
# Azurite's fixed development account (documented, public): not a secret.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def load_function_app():
    """`load(**env)` imports the function app afresh (it loads its model at import) with `env` set and
    returns (module, {function name: the user's undecorated function}); sys.modules is cleaned after."""
    logger = logging.getLogger("slimserve")
    saved_level, saved_handlers = logger.level, list(logger.handlers)

    def load(**env: str):
        saved = os.environ.copy()
        os.environ.update(env)
        sys.modules.pop(FUNCTION_APP, None)
        try:
            module = importlib.import_module(FUNCTION_APP)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        # get_functions() may run once per FunctionApp: a second call reports every name as a duplicate. The
        # triggers (auth level, paths) are kept on the module for the tests that read them.
        indexed = module.app.get_functions()
        module.indexed_triggers = {f.get_function_name(): f.get_trigger() for f in indexed}
        return module, {f.get_function_name(): f.get_user_function() for f in indexed}

    yield load
    sys.modules.pop(FUNCTION_APP, None)
    logger.setLevel(saved_level)
    logger.handlers[:] = saved_handlers


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> str:
    """Azurite's blob and queue services in memory; yields the storage connection string."""
    if not AZURITE.exists() or shutil.which("node") is None:
        need("Azurite (node_modules/.bin/azurite-*)", False, "run `npm ci` (make test does), which needs node")
    blob, queue, table = free_port(), free_port(), free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    cmd = [
        str(AZURITE),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
        "--silent",
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(blob),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(queue),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(table),
    ]
    log = open(workdir / "azurite.log", "wb")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (_listening(blob) and _listening(queue)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Azurite did not start:\n{(workdir / 'azurite.log').read_text(errors='replace')}")
            time.sleep(0.1)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{blob}/{ACCOUNT};QueueEndpoint=http://127.0.0.1:{queue}/{ACCOUNT};"
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
