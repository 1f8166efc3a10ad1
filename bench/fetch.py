"""Fetch throughput: a ~1 GB artifact file from a moto S3 server on 127.0.0.1, with parallel ranged reads and
as one sequential stream (not part of `make bench`; `python bench/fetch.py`).

The path measured is the one `slimserve serve s3://...#sha256=...` and a cold start take: `localize` ->
`fetch_artifact` -> `Storage.download` (shared/transfer.py), pinned, hashed, written to a fresh cache folder
and verified (`load_artifact` hashes every file once more, as every load does). Each mode gets an empty cache.

What it does not say: how fast S3 is. moto (in its own process, as the real server would be) copies the whole
object out of its store for every GET, ranged or not, so a ranged read of 16 MiB from a 1 GiB object costs the
server a 1 GiB copy; and client and server share this machine's cores. infra/limits.py holds the figure a
budget should assume on Lambda (S3_GET_BYTES_PER_S) and its sources.

    BENCH_FETCH_BYTES   size of the file (default 1 GiB)
    BENCH_FETCH_MODES   concurrency x part MiB, comma-separated (default "1x16,8x16": one stream, then 8 x 16 MiB)

Then the client alone: the same `Storage.download` from the file on this disk (file://, page cache), so the
figure is the part pipeline's own (pread, pwrite, sha256 in order), with no server in the way.

Nothing here asserts a time. Prints one JSON line per mode, then a summary line.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZE = int(os.environ.get("BENCH_FETCH_BYTES", str(1 << 30)))
MODES = [tuple(int(x) for x in m.split("x")) for m in os.environ.get("BENCH_FETCH_MODES", "1x16,8x16").split(",")]


def start_moto() -> tuple[subprocess.Popen, str]:
    from tests.conftest import free_port, wait_for_http

    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_http(f"http://127.0.0.1:{port}/moto-api/", proc, timeout=60)
    return proc, f"http://127.0.0.1:{port}"


def write_artifact(folder: Path) -> Path:
    """The tiny test model plus a SIZE-byte random `weights.bin`, listed in the manifest like any file."""
    from dataclasses import replace

    from shared.artifact.loading import file_entries, read_manifest, write_manifest
    from tests.helpers import write_tiny_artifact

    write_tiny_artifact(folder)
    with open(folder / "weights.bin", "wb") as fh:
        for start in range(0, SIZE, 16 << 20):
            fh.write(os.urandom(min(16 << 20, SIZE - start)))
    manifest = read_manifest(folder)
    write_manifest(folder, replace(manifest, files=file_entries(folder, [*manifest.files, "weights.bin"])))
    return folder


def server_peak_rss(proc: subprocess.Popen) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig

    from shared.artifact.fetch import localize
    from shared.storage import Storage
    from shared.transfer import Transfer

    proc, endpoint = start_moto()
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, **credentials})
    tmp = Path(tempfile.mkdtemp(prefix="slimserve-bench-fetch-"))
    results = []
    try:
        local = write_artifact(tmp / "artifact")
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        for path in sorted(local.iterdir()):
            s3.upload_file(str(path), "bench", f"big/1/{path.name}", Config=TransferConfig(multipart_chunksize=64 << 20))
        pin = hashlib.sha256((local / "manifest.json").read_bytes()).hexdigest()
        total = sum(p.stat().st_size for p in local.iterdir())
        for concurrency, part_mib in MODES:
            cache = tmp / f"cache-{concurrency}x{part_mib}"
            store = Storage(transfer=Transfer(concurrency, part_mib << 20))
            store.size("s3://bench/big/1/manifest.json")  # the client exists before the clock starts, as after boot
            start = time.perf_counter()
            folder = localize(f"s3://bench/big/1#sha256={pin}", cache, store)
            seconds = time.perf_counter() - start
            assert (Path(folder) / "weights.bin").stat().st_size == SIZE
            result = {
                "mode": "sequential stream" if concurrency == 1 else "parallel ranged reads",
                "concurrency": concurrency,
                "part_bytes": part_mib << 20,
                "bytes": total,
                "seconds": round(seconds, 2),
                "mb_per_s": round(total / seconds / 1e6, 1),
                "client_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "moto_peak_rss_bytes": server_peak_rss(proc),
            }
            print(json.dumps(result), flush=True)
            results.append(result)
            shutil.rmtree(cache)
        for concurrency, part_mib in MODES:
            store = Storage(transfer=Transfer(concurrency, part_mib << 20))
            start = time.perf_counter()
            store.download(f"file://{local}/weights.bin", tmp / "copy.bin", SIZE)
            seconds = time.perf_counter() - start
            mb_per_s = round(SIZE / seconds / 1e6, 1)
            ceiling = {"mode": "client alone (file://)", "concurrency": concurrency, "part_bytes": part_mib << 20, "mb_per_s": mb_per_s}
            print(json.dumps(ceiling), flush=True)
            (tmp / "copy.bin").unlink()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {f"{r['concurrency']}x{r['part_bytes'] >> 20}MiB": r["mb_per_s"] for r in results}
    print(json.dumps({"summary": {"moto s3://": summary}, "unit": "MB/s"}))


if __name__ == "__main__":
    main()
