"""shared.storage against the real thing's local stand-ins: moto (S3), gcp-storage-emulator (GCS),
Azurite (Azure Blob), and the disk."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from shared import storage
from shared.errors import NotFound, RecordError, StorageError
from tests.conftest import ROOT, free_port

AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # its documented dev key


def test_uri_forms():
    assert storage.parse("s3://b/in/a b?c#d%20.npy") == storage.ObjectUri("s3", "b", "in/a b?c#d%20.npy")  # keys verbatim
    assert storage.parse("gs://b/x.npy") == storage.ObjectUri("gs", "b", "x.npy")
    assert storage.parse("azure://c/dir/x.npy") == storage.ObjectUri("azure", "c", "dir/x.npy")
    assert storage.parse("https://acct.blob.core.windows.net/c/dir/a%20b.npy") == storage.ObjectUri("azure", "c", "dir/a b.npy")
    assert storage.parse("file:///tmp/a%20b.npy") == storage.ObjectUri("file", "", "/tmp/a b.npy")
    assert storage.relative_key("s3://b/in/x.npy") == "in/x.npy"


@pytest.mark.parametrize(
    "uri, message",
    [
        ("ftp://host/x", "not an object URI"),
        ("s3:///x", "no bucket"),
        ("s3://b/in/../x", "'..' segment"),
        ("file://host/tmp/x", "must be absolute"),
        ("file:///tmp/../etc/passwd", "'..' segment"),
    ],
)
def test_bad_uris_are_record_errors(uri, message):
    with pytest.raises(RecordError, match=message):
        storage.parse(uri)


def test_join_keeps_keys_under_the_prefix():
    assert storage.join("s3://out/results/", "in/x.npy.json") == "s3://out/results/in/x.npy.json"
    for key in ("../x", "a/./b", "a\\..\\b"):
        with pytest.raises(RecordError):
            storage.join("file:///tmp/out", key)


def test_file_backend_round_trip(tmp_path: Path):
    uri = f"file://{tmp_path}/deep/er/x.json"
    assert not storage.exists(uri)
    storage.write(uri, b"one")
    storage.write(uri, b"two")  # overwrite, never a second object
    assert storage.read(uri) == b"two" and storage.exists(uri)
    assert [p.name for p in (tmp_path / "deep" / "er").iterdir()] == ["x.json"]  # no temp files left
    with pytest.raises(NotFound):
        storage.read(f"file://{tmp_path}/nope")


def test_s3_backend_against_moto(aws):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="storage-test")
    uri = "s3://storage-test/in/a b?c#d.npy"
    storage.write(uri, b"payload", "application/octet-stream")
    assert s3.get_object(Bucket="storage-test", Key="in/a b?c#d.npy")["Body"].read() == b"payload"
    assert storage.read(uri) == b"payload" and storage.exists(uri)
    assert not storage.exists("s3://storage-test/missing")
    with pytest.raises(NotFound, match="does not exist"):
        storage.read("s3://storage-test/missing")
    with pytest.raises(NotFound, match="bucket 'no-such-bucket'"):
        storage.read("s3://no-such-bucket/x")


def test_gcs_backend_against_the_emulator(monkeypatch):
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="slimserve-gcs")
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        storage.reset()
        uri = "gs://slimserve-gcs/in/a b.npy"
        storage.write(uri, b"payload")
        assert storage.read(uri) == b"payload" and storage.exists(uri)
        with pytest.raises(NotFound):
            storage.read("gs://slimserve-gcs/missing")
    finally:
        storage.reset()
        server.stop()


@pytest.fixture
def azurite(tmp_path, monkeypatch):
    if not AZURITE.exists():
        pytest.skip("Azurite is not installed (npm ci)")
    port = free_port()
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(tmp_path / "azurite"), "--silent", "--skipApiVersionCheck", "--loose"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    connection = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("SLIMSERVE_AZURE_CONNECTION", connection)
    storage.reset()
    try:
        from azure.storage.blob import BlobServiceClient

        # Wait for the port ourselves: the SDK's own retries back off for tens of seconds.
        deadline = time.monotonic() + 30
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
        yield service
    finally:
        storage.reset()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp_path / "azurite", ignore_errors=True)


def test_azure_backend_against_azurite(azurite):
    storage.write("azure://slimserve/in/a b.npy", b"payload")
    assert azurite.get_blob_client("slimserve", "in/a b.npy").download_blob().readall() == b"payload"
    # The URL form Azure prints names the same blob (account from the connection string).
    assert storage.read("https://devstoreaccount1.blob.core.windows.net/slimserve/in/a%20b.npy") == b"payload"
    assert storage.exists("azure://slimserve/in/a b.npy") and not storage.exists("azure://slimserve/missing")
    with pytest.raises(NotFound):
        storage.read("azure://slimserve/missing")


def test_azure_without_a_connection_string_says_what_is_missing(monkeypatch):
    for name in storage.AZURE_CONNECTION_ENV:
        monkeypatch.delenv(name, raising=False)
    storage.reset()
    with pytest.raises(StorageError, match="SLIMSERVE_AZURE_CONNECTION or AzureWebJobsStorage"):
        storage.read("azure://c/x")
    storage.reset()
