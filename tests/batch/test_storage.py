"""shared.storage against the real thing's local stand-ins: moto (S3), gcp-storage-emulator (GCS),
Azurite (Azure Blob), and the disk."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import numpy as np
import pytest

from shared import storage
from shared.errors import LimitExceeded, NotFound, RecordError, StorageError
from shared.storage import Storage
from tests.conftest import free_port


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


def exercise(store: Storage, uri: str, missing: str, tmp_path: Path) -> None:
    """What every backend must do the same way: write (overwrite), read, size, bounded read, streamed
    download with its sha256, exists, NotFound."""
    import hashlib

    store.write(uri, b"one")
    store.write(uri, b"payload")  # overwrite, never a second object
    assert store.read(uri) == b"payload" and store.exists(uri) and store.size(uri) == 7
    assert store.read(uri, max_bytes=7) == b"payload"
    with pytest.raises(LimitExceeded, match="is 7 bytes, over SLIMSERVE_X=6"):
        store.read(uri, max_bytes=6, setting="SLIMSERVE_X")
    assert store.download(uri, tmp_path / "copy", 7) == hashlib.sha256(b"payload").hexdigest()
    assert (tmp_path / "copy").read_bytes() == b"payload"
    with pytest.raises(StorageError, match="larger than the 6 bytes expected"):
        store.download(uri, tmp_path / "copy", 6)
    assert not store.exists(missing)
    for call in (lambda: store.read(missing), lambda: store.size(missing), lambda: store.read(missing, max_bytes=10)):
        with pytest.raises(NotFound, match="does not exist"):
            call()


def exercise_listing(store: Storage, base: str) -> None:
    """Listing, the same on every backend: everything under a prefix, in pages, with sizes and times;
    nothing outside it; a prefix without `/` is a key prefix, as S3 means it."""
    from datetime import datetime, timedelta

    inside = {f"{base}/in/a.npy": b"1", f"{base}/in/sub/b.npy": b"22", f"{base}/in/c d+e%20.npy": b"333"}
    outside = {f"{base}/input2/x.npy": b"4444", f"{base}/other/in/y.npy": b"55555"}
    for uri, data in {**inside, **outside}.items():
        store.write(uri, data)
    listed = list(store.list(f"{base}/in/", page_size=2))  # two pages and a half: the pager must follow
    key = lambda uri: storage.parse(uri).key  # noqa: E731  (file:// URIs come back quoted; the keys are equal)
    assert {key(item.uri): item.size for item in listed} == {key(uri): len(data) for uri, data in inside.items()}
    now = datetime.now(UTC)
    assert all(abs(item.modified - now) < timedelta(minutes=10) for item in listed)
    assert {key(item.uri) for item in store.list(f"{base}/in")} == {key(u) for u in [*inside, f"{base}/input2/x.npy"]}
    assert list(store.list(f"{base}/nothing-here/")) == []


def test_file_backend_round_trip(tmp_path: Path):
    uri = f"file://{tmp_path}/deep/er/x.json"
    exercise(Storage(), uri, f"file://{tmp_path}/nope", tmp_path)
    exercise_listing(Storage(), f"file://{tmp_path}/listing")
    assert [p.name for p in (tmp_path / "deep" / "er").iterdir()] == ["x.json"]  # no temp files left


def test_s3_backend_against_moto(aws, tmp_path):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="storage-test")
    store = Storage()
    uri = "s3://storage-test/in/a b?c#d.npy"
    exercise(store, uri, "s3://storage-test/missing", tmp_path)
    assert s3.get_object(Bucket="storage-test", Key="in/a b?c#d.npy")["Body"].read() == b"payload"
    assert store.read_typed(uri)[1] == "application/octet-stream"
    with pytest.raises(NotFound, match="bucket 'no-such-bucket'"):
        store.read("s3://no-such-bucket/x")
    exercise_listing(store, "s3://storage-test/listing")
    with pytest.raises(NotFound, match="bucket 'no-such-bucket'"):
        list(store.list("s3://no-such-bucket/x/"))


def test_gcs_backend_against_the_emulator(monkeypatch, tmp_path):
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="slimserve-gcs")
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        exercise(Storage(), "gs://slimserve-gcs/in/a b.npy", "gs://slimserve-gcs/missing", tmp_path)
        exercise_listing(Storage(), "gs://slimserve-gcs/listing")
    finally:
        server.stop()


def test_azure_backend_against_azurite(azurite, tmp_path):
    service, store = azurite
    exercise(store, "azure://slimserve/in/a b.npy", "azure://slimserve/missing", tmp_path)
    assert service.get_blob_client("slimserve", "in/a b.npy").download_blob().readall() == b"payload"
    # The URL form Azure prints names the same blob (account from the connection string).
    assert store.read("https://devstoreaccount1.blob.core.windows.net/slimserve/in/a%20b.npy") == b"payload"
    assert store.azure_account == "devstoreaccount1"
    exercise_listing(store, "azure://slimserve/listing")


def test_azure_without_a_connection_string_says_what_is_missing(monkeypatch):
    for name in storage.AZURE_CONNECTION_ENV:
        monkeypatch.delenv(name, raising=False)
    from shared.config import Settings

    with pytest.raises(StorageError, match="SLIMSERVE_AZURE_CONNECTION or AzureWebJobsStorage"):
        Storage.from_settings(Settings.resolve()).read("azure://c/x")


def upload(store: Storage, prefix: str, folder: Path) -> str:
    """Every file of an artifact folder under `prefix`; returns the pinned location."""
    import hashlib

    for path in folder.iterdir():
        store.write(f"{prefix}/{path.name}", path.read_bytes())
    return f"{prefix}#sha256={hashlib.sha256((folder / 'manifest.json').read_bytes()).hexdigest()}"


def test_an_artifact_is_fetched_from_gcs_and_served(monkeypatch, tmp_path):
    from gcp_storage_emulator.server import create_server

    from shared.boot.build import start
    from tests.helpers import write_tiny_artifact

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="models")
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        location = upload(Storage(), "gs://models/tiny/1", write_tiny_artifact(tmp_path / "tiny"))
        runtime = start(tmp_path / "none", artifact=location, cache_dir=str(tmp_path / "cache"))
        outputs, _ = runtime.plane.model("tiny").answer({"input": np.ones((1, 4), np.float32)})
        assert outputs["probs"].shape == (1, 3) and len(list((tmp_path / "cache").iterdir())) == 1
    finally:
        server.stop()


def test_an_artifact_is_fetched_from_azure_blob_and_served(azurite, tmp_path, monkeypatch):
    from shared.boot.build import start
    from tests.helpers import write_tiny_artifact

    service, store = azurite
    monkeypatch.setenv("SLIMSERVE_AZURE_CONNECTION", store._backends["azure"].connection)
    location = upload(store, "azure://slimserve/models/tiny/1", write_tiny_artifact(tmp_path / "tiny"))
    runtime = start(tmp_path / "none", artifact=location, cache_dir=str(tmp_path / "cache"))
    outputs, _ = runtime.plane.model("tiny").answer({"input": np.ones((1, 4), np.float32)})
    assert outputs["probs"].shape == (1, 3)
