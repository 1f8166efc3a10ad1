from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from shared.boot.build import start
from shared.serving.dataplane import DataPlane
from shared.storage import Storage
from tests.aws_local import aws, moto_endpoint  # noqa: F401  (fixtures)
from tests.batch.models import write_lookup_artifact, write_word_count_artifact
from tests.conftest import ROOT, free_port
from tests.helpers import write_tiny_artifact
from tests.tools import need

AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # its documented dev key


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "tiny": write_tiny_artifact(root / "tiny"),
        "words": write_word_count_artifact(root / "words"),
        "lookup": write_lookup_artifact(root / "lookup"),
    }


@pytest.fixture(scope="module")
def plane(models) -> DataPlane:
    """Both models in one process, as a function serving several artifacts holds them."""
    folders = [str(f) for f in models.values()]
    return start(folders[0], artifact=",".join(folders)).plane


@pytest.fixture
def azurite(tmp_path, monkeypatch):
    if not AZURITE.exists():
        need("Azurite (node_modules/.bin/azurite-blob)", False, "run `npm ci` (make test does), which needs node")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(tmp_path / "azurite"),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    connection = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    try:
        from azure.storage.blob import BlobServiceClient

        # Wait for the port ourselves: the SDK's own retries back off for tens of seconds.
        deadline = time.monotonic() + 120  # node starts slowly on a loaded machine
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"Azurite did not start (exit code {proc.poll()})") from None
                time.sleep(0.1)
        service = BlobServiceClient.from_connection_string(connection)
        service.create_container("slimserve")
        yield service, Storage(connection)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp_path / "azurite", ignore_errors=True)


@pytest.fixture
def gcs(monkeypatch):
    """gcp-storage-emulator on a free loopback port, bucket `slimserve-gcs`; always stopped."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="slimserve-gcs")
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        yield "gs://slimserve-gcs"
    finally:
        server.stop()
