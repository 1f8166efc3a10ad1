"""Large objects fetched in parallel ranged parts (shared/transfer.py) from moto S3, the GCS emulator and
Azurite: byte-identical with the right sha256, pinned to one object version, refused when the object is not
the size the caller expects (without reading past it), in memory bounded by concurrency x part size."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import tracemalloc

import pytest

from shared.artifact.fetch import fetch_artifact
from shared.artifact.loading import file_entries, read_manifest, write_manifest
from shared.config import Settings
from shared.errors import ArtifactError, StorageError
from shared.storage import Storage
from shared.transfer import Transfer
from tests.conftest import free_port, wait_for_http
from tests.helpers import write_tiny_artifact

PART = 256 << 10  # the smallest part allowed: a few MB make many parts
DATA = os.urandom(3 * (1 << 20) + 12_345)  # 13 parts, the last one short


def s3_gets(store: Storage) -> list[dict]:
    """Every GetObject's parameters, seen at botocore's own hook."""
    seen: list[dict] = []
    events = store._backends["s3"].client().meta.events
    events.register("before-parameter-build.s3.GetObject", lambda params, **kw: seen.append(dict(params)))
    return seen


@pytest.fixture
def bucket(aws) -> str:
    aws.client("s3").create_bucket(Bucket="ranged")
    return "s3://ranged"


def test_many_parts_from_moto_are_byte_identical_and_pinned(bucket, tmp_path):
    store = Storage(transfer=Transfer(4, PART))
    store.write(f"{bucket}/big.bin", DATA)
    gets = s3_gets(store)

    digest = store.download(f"{bucket}/big.bin", tmp_path / "big.bin", len(DATA))

    assert digest == hashlib.sha256(DATA).hexdigest() and (tmp_path / "big.bin").read_bytes() == DATA
    assert sorted(g["Range"] for g in gets) == sorted(f"bytes={s}-{min(s + PART, len(DATA)) - 1}" for s in range(0, len(DATA), PART))
    assert len({g["IfMatch"] for g in gets}) == 1  # every part pinned to the ETag the HEAD saw


@pytest.mark.parametrize("concurrency", [1, 8])
def test_an_object_of_one_part_or_concurrency_one_is_one_get(bucket, tmp_path, concurrency):
    store = Storage(transfer=Transfer(concurrency, PART if concurrency == 1 else 16 << 20))
    store.write(f"{bucket}/big.bin", DATA)
    gets = s3_gets(store)

    assert store.download(f"{bucket}/big.bin", tmp_path / "out", len(DATA)) == hashlib.sha256(DATA).hexdigest()
    assert (tmp_path / "out").read_bytes() == DATA
    assert [g["Range"] for g in gets] == [f"bytes=0-{len(DATA)}"]  # one byte past: how a longer object shows


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("delta", [-1, +1, -PART])
def test_an_object_not_the_expected_size_is_refused_without_reading_past_it(bucket, tmp_path, concurrency, delta):
    store = Storage(transfer=Transfer(concurrency, PART))
    store.write(f"{bucket}/big.bin", DATA)
    gets = s3_gets(store)
    expected = len(DATA) - delta  # the object is `delta` bytes longer than expected

    with pytest.raises(StorageError, match=f"{'larger' if delta > 0 else 'smaller'} than the {expected:,} bytes expected"):
        store.download(f"{bucket}/big.bin", tmp_path / "out", expected)

    if concurrency > 1:
        assert gets == []  # refused from the HEAD's size, before any byte was read
    else:
        assert [g["Range"] for g in gets] == [f"bytes=0-{expected}"]


def overwrite_during(store: Storage, scheme: str, uri: str, after_parts: int = 2) -> list[int]:
    """Replace the object with another version once `after_parts` ranged reads have been made."""
    backend = store._backends[scheme]
    real, calls, lock = backend.read_into, [], threading.Lock()

    def read_into(obj, start, length, version, sink):
        with lock:
            calls.append(start)
            if len(calls) == after_parts + 1:
                store.write(uri, DATA[::-1])
        return real(obj, start, length, version, sink)

    backend.read_into = read_into
    return calls


def test_an_object_overwritten_between_parts_is_refused_on_s3(bucket, tmp_path):
    store = Storage(transfer=Transfer(2, PART))
    store.write(f"{bucket}/big.bin", DATA)
    overwrite_during(store, "s3", f"{bucket}/big.bin")
    with pytest.raises(StorageError, match="changed while it was being read"):
        store.download(f"{bucket}/big.bin", tmp_path / "out", len(DATA))


def test_many_parts_from_the_gcs_emulator(gcs, tmp_path):
    """The emulator ignores ifGenerationMatch and sends no x-goog-generation header, so the version pin
    (which real GCS honours with 412) cannot be shown failing here; the parts and their order can."""
    store = Storage(transfer=Transfer(4, PART))
    store.write(f"{gcs}/big.bin", DATA)
    assert store.download(f"{gcs}/big.bin", tmp_path / "out", len(DATA)) == hashlib.sha256(DATA).hexdigest()
    assert (tmp_path / "out").read_bytes() == DATA
    with pytest.raises(StorageError, match="larger than the"):
        store.download(f"{gcs}/big.bin", tmp_path / "out", len(DATA) - 1)


def test_many_parts_from_azurite_and_an_overwrite_between_them(azurite, tmp_path):
    _, plain = azurite
    store = Storage(plain.azure_connection, Transfer(4, PART))
    uri = "azure://slimserve/big.bin"
    store.write(uri, DATA)
    assert store.download(uri, tmp_path / "out", len(DATA)) == hashlib.sha256(DATA).hexdigest()
    assert (tmp_path / "out").read_bytes() == DATA

    overwrite_during(store, "azure", uri)
    with pytest.raises(StorageError, match="changed while it was being read"):
        store.download(uri, tmp_path / "again", len(DATA))


def test_a_file_replaced_between_parts_is_refused(tmp_path):
    store = Storage(transfer=Transfer(2, PART))
    uri = f"file://{tmp_path}/big.bin"
    store.write(uri, DATA)
    assert store.download(uri, tmp_path / "out", len(DATA)) == hashlib.sha256(DATA).hexdigest()
    overwrite_during(store, "file", uri)
    with pytest.raises(StorageError, match="changed while it was being read"):
        store.download(uri, tmp_path / "again", len(DATA))


def test_a_fetched_artifact_comes_in_parts_and_an_overwrite_leaves_no_cache(bucket, tmp_path):
    """fetch_artifact (what `slimserve serve s3://` and a cold start run) over a file of many parts."""
    local = write_tiny_artifact(tmp_path / "local")
    (local / "weights.bin").write_bytes(DATA)
    manifest = read_manifest(local)
    write_manifest(local, manifest.__class__(**{**vars(manifest), "files": file_entries(local, [*manifest.files, "weights.bin"])}))
    store = Storage(transfer=Transfer.from_settings(Settings(fetch_concurrency=3, fetch_part_bytes=PART)))
    for path in local.iterdir():
        store.write(f"{bucket}/tiny/1/{path.name}", path.read_bytes())
    pin = hashlib.sha256((local / "manifest.json").read_bytes()).hexdigest()
    gets = s3_gets(store)

    folder = fetch_artifact(f"{bucket}/tiny/1", tmp_path / "cache", store, pin)

    assert (folder / "weights.bin").read_bytes() == DATA
    assert sum(g["Key"] == "tiny/1/weights.bin" for g in gets) == -(-len(DATA) // PART)

    overwrite_during(store, "s3", f"{bucket}/tiny/1/weights.bin")
    with pytest.raises(ArtifactError, match="changed while it was being read"):
        fetch_artifact(f"{bucket}/tiny/1", tmp_path / "cache2", store, pin)
    assert list((tmp_path / "cache2").iterdir()) == []  # no half folder left behind


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SLIMSERVE_FETCH_CONCURRENCY": "0"}, "SLIMSERVE_FETCH_CONCURRENCY=0 must be between 1 and 64"),
        ({"SLIMSERVE_FETCH_CONCURRENCY": "many"}, "SLIMSERVE_FETCH_CONCURRENCY='many' is not an integer"),
        ({"SLIMSERVE_FETCH_PART_BYTES": "1024"}, "SLIMSERVE_FETCH_PART_BYTES=1024 must be between 262,144 and 268,435,456"),
    ],
)
def test_silly_fetch_settings_are_refused_in_one_line(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.resolve(env)
    with pytest.raises(ValueError, match="must be between"):
        Transfer(concurrency=65)


def test_fetch_settings_reach_the_storage():
    settings = Settings.resolve({"SLIMSERVE_FETCH_CONCURRENCY": "3", "SLIMSERVE_FETCH_PART_BYTES": str(1 << 20)})
    assert Storage.from_settings(settings).transfer == Transfer(3, 1 << 20)


@pytest.fixture
def moto_process(monkeypatch):
    """moto in its own process: its server copies the whole object for every ranged GET, which must not be
    counted as the client's memory."""
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", proc, timeout=60)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_memory_stays_under_concurrency_times_part_size(moto_process, tmp_path):
    """A 64 MiB object in 1 MiB parts, 4 at once: the client's Python allocations peak at a few MiB."""
    import boto3

    size, part = 64 << 20, 1 << 20
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="memory")
    with open(tmp_path / "src", "wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))
    s3.upload_file(str(tmp_path / "src"), "memory", "big.bin")
    with open(tmp_path / "src", "rb") as fh:
        expected = hashlib.file_digest(fh, "sha256").hexdigest()
    store = Storage(transfer=Transfer(4, part))
    store.size("s3://memory/big.bin")  # the client made before measuring: its one-off imports are no fetch's

    tracemalloc.start()
    try:
        digest = store.download("s3://memory/big.bin", tmp_path / "out", size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert digest == expected
    print(json.dumps({"object_bytes": size, "part_bytes": part, "concurrency": 4, "tracemalloc_peak_bytes": peak}))
    assert peak < 4 * part * 3, f"peak {peak:,} bytes for {size:,} bytes fetched"  # ~concurrency x part, never the object


@pytest.mark.parametrize("where", ["s3", "gcs", "azure"])
def test_an_empty_file_of_an_artifact_is_fetched_and_a_longer_one_refused(where, request, tmp_path):
    """An empty object answers any Range with 416 (S3, moto): a whole-object read goes without one."""
    if where == "azure":
        _, plain = request.getfixturevalue("azurite")
        store, prefix = Storage(plain.azure_connection, Transfer(4, PART)), "azure://slimserve"
    else:
        store, prefix = Storage(transfer=Transfer(4, PART)), request.getfixturevalue("bucket" if where == "s3" else "gcs")
    store.write(f"{prefix}/empty", b"")
    store.write(f"{prefix}/one", b"x")

    assert store.download(f"{prefix}/empty", tmp_path / "empty", 0) == hashlib.sha256(b"").hexdigest()
    assert (tmp_path / "empty").read_bytes() == b""
    with pytest.raises(StorageError, match="larger than the 0 bytes expected"):
        store.download(f"{prefix}/one", tmp_path / "one", 0)


def _uploaded(bucket: str, tmp_path, store: Storage) -> tuple[str, str]:
    """The tiny artifact plus DATA as weights.bin, in the bucket: (prefix, pin)."""
    local = write_tiny_artifact(tmp_path / "local")
    (local / "weights.bin").write_bytes(DATA)
    manifest = read_manifest(local)
    write_manifest(local, manifest.__class__(**{**vars(manifest), "files": file_entries(local, [*manifest.files, "weights.bin"])}))
    for path in local.iterdir():
        store.write(f"{bucket}/tiny/1/{path.name}", path.read_bytes())
    return f"{bucket}/tiny/1", hashlib.sha256((local / "manifest.json").read_bytes()).hexdigest()


def test_a_killed_fetchs_staging_folder_is_swept_and_a_live_ones_is_kept(bucket, tmp_path):
    """SIGKILL (Lambda's end of an init past its limit) runs no cleanup: the next fetch removes what it left,
    in a /tmp sized for one copy, but never a staging folder another process is still filling."""
    import fcntl

    store = Storage(transfer=Transfer(4, PART))
    prefix, pin = _uploaded(bucket, tmp_path, store)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    killed, live = cache / ".c94e9cca2177-killed", cache / ".c94e9cca2177-live"
    for folder in (killed, live):
        folder.mkdir()
        (folder / "weights.bin").write_bytes(DATA[:1000])
    held = os.open(live, os.O_RDONLY | os.O_DIRECTORY)  # another open file description: another fetch's lock
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        folder = fetch_artifact(prefix, cache, store, pin)
    finally:
        os.close(held)

    assert (folder / "weights.bin").read_bytes() == DATA
    assert sorted(p.name for p in cache.iterdir()) == sorted([folder.name, live.name])


LOCAL_DISK = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG, as on a full /tmp
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
from shared.errors import StorageError
from shared.storage import Storage
from shared.transfer import Transfer
source, out = sys.argv[1], Path(sys.argv[2])
for concurrency in (1, 4):
    try:
        Storage(transfer=Transfer(concurrency, 256 << 10)).download("file://" + source, out, Path(source).stat().st_size)
    except StorageError as exc:
        print(concurrency, exc.message, out.exists())
"""


def test_a_local_disk_that_refuses_the_write_is_a_storage_error_naming_the_file_and_leaves_none(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(DATA)  # 3 MiB, over the 1 MiB the child may write

    proc = subprocess.run(
        [sys.executable, "-c", LOCAL_DISK, str(source), str(tmp_path / "out.bin")], capture_output=True, text=True, timeout=60
    )

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines == [f"{c} cannot write {tmp_path / 'out.bin'}: File too large False" for c in (1, 4)], proc.stdout


@pytest.mark.parametrize("pointer", [b"[" * 30_000, b'{"location": "' + b"x" * (70 << 10) + b'"}', b"[1]"])
def test_a_fetch_json_that_is_no_pointer_is_one_artifact_error(tmp_path, pointer):
    from shared.artifact.fetch import localize

    folder = write_tiny_artifact(tmp_path / "bundled")
    (folder / "fetch.json").write_bytes(pointer)
    with pytest.raises(ArtifactError, match="fetch.json: not"):
        localize(str(folder), tmp_path / "cache", Storage())
