"""Batch throughput and backfill rate (part of `make bench`; `python bench/batch.py` alone).

  batch core   digits records (one .npy object each, 1 row) through `BatchRunner.run` in invocations of 10
               and 100 records (SQS's default batch size and serverless.yml's batchSize): read, decode and
               check through the data plane, micro-batched across records, run, encode, write one result
               object each (file:// storage on tmpfs where there is one, so the figure is the core's, not a
               disk's);
               against a raw onnxruntime loop, `session.run` once per record on arrays already in memory
  backfill     `Backfill` with the SQS destination against moto in server mode: objects listed, results
               looked up, messages sent (SendMessageBatch of 10, 8 threads) per second

Nothing here asserts a time. BENCH_BATCH_RECORDS (default 2000), BENCH_BACKFILL_OBJECTS (default 1000).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
RECORDS = int(os.environ.get("BENCH_BATCH_RECORDS", "2000"))
OBJECTS = int(os.environ.get("BENCH_BACKFILL_OBJECTS", "1000"))


def npy(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, x)
    return buffer.getvalue()


def batch_core(artifact: Path, samples: np.ndarray, tmp: Path) -> dict[str, float]:
    from shared.batch.core import BatchRunner, Record
    from shared.boot.build import start

    inputs = tmp / "in"
    inputs.mkdir()
    arrays = [samples[i % len(samples)][None] for i in range(RECORDS)]
    for i, x in enumerate(arrays):
        (inputs / f"{i:06d}.npy").write_bytes(npy(x))
    records = [Record.from_uri(f"file://{inputs}/{i:06d}.npy") for i in range(RECORDS)]
    runtime = start(artifact, artifact=str(artifact), log_level="WARNING", log_format="text")
    session = runtime.plane.repository.get("digits").session
    name = session.get_inputs()[0].name

    def core(per_call: int, max_size: int) -> float:
        settings = runtime.settings.__class__.resolve(
            output=f"file://{tmp}/out-{per_call}-{max_size}", batch_max_size=max_size, log_level="WARNING", artifact=str(artifact)
        )
        runner = BatchRunner(runtime.plane, settings, runtime.storage)
        runner.run(records[:per_call])  # warm: threads, the session's first runs
        start_s = time.perf_counter()
        for at in range(0, RECORDS, per_call):
            report = runner.run(records[at : at + per_call])
            assert not report.failed, report.failed[0].error
        return RECORDS / (time.perf_counter() - start_s)

    def raw_loop() -> float:
        for x in arrays[:100]:
            session.run(None, {name: x})
        start_s = time.perf_counter()
        for x in arrays:
            session.run(None, {name: x})
        return RECORDS / (time.perf_counter() - start_s)

    def hand_loop() -> float:
        """What one writes without the core: np.load, session.run, json.dumps, write; no checks, no threads."""
        out = tmp / "hand"
        out.mkdir()
        outputs = [o.name for o in session.get_outputs()]
        start_s = time.perf_counter()
        for i in range(RECORDS):
            x = np.load(inputs / f"{i:06d}.npy")
            results = session.run(None, {name: x})
            doc = {"outputs": [{"name": n, "shape": list(v.shape), "data": v.ravel().tolist()} for n, v in zip(outputs, results)]}
            (out / f"{i:06d}.npy.json").write_text(json.dumps(doc))
        return RECORDS / (time.perf_counter() - start_s)

    return {"raw": raw_loop(), "hand": hand_loop(), "core10": core(10, 64), "core100": core(100, 64), "core100_unbatched": core(100, 1)}


class Dropped:
    """A destination that takes every message and keeps none: what listing, result lookup and building
    the S3 notifications cost on their own."""

    scheme, batch_size = "s3", 10

    def __init__(self):
        from shared.batch.backfill_sinks import SqsSink

        self.shape = SqsSink("https://sqs.us-east-1.amazonaws.com/123456789012/bench")

    def check(self) -> None:
        pass

    def send(self, items):
        for item in items:
            self.shape.message(item)
        return []


def backfill_rate(tmp: Path) -> dict[str, float]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from shared.batch.backfill import Backfill
    from shared.batch.backfill_sinks import SqsSink
    from shared.storage import Storage
    from tests.conftest import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        s3, sqs = boto3.client("s3"), boto3.client("sqs")
        s3.create_bucket(Bucket="bench")
        url = sqs.create_queue(QueueName="bench")["QueueUrl"]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket="bench", Key=f"incoming/{i:07d}.npy", Body=b"x"), range(OBJECTS)))
        dropped = Backfill(Storage(), Dropped(), "s3://bench/incoming/", output="s3://bench/results").run()
        tally = Backfill(Storage(), SqsSink(url), "s3://bench/incoming/", output="s3://bench/results").run()
        assert tally.enqueued == OBJECTS and not tally.failed, tally.summary()
        depth = int(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                "ApproximateNumberOfMessages"
            ]
        )
        return {
            "rate": tally.enqueued / tally.elapsed_s,
            "elapsed": tally.elapsed_s,
            "depth": depth,
            "engine": dropped.enqueued / dropped.elapsed_s,
        }
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def main() -> int:
    from run import ARTIFACT, DIGITS, ensure_artifact

    ensure_artifact()
    samples = np.load(DIGITS / "data" / "eval.npz")["input"].astype(np.float32)
    # In memory (tmpfs) where there is one: a small file's create + rename costs ~2 ms on this VM's disk,
    # which would be the figure instead of the core's own work.
    memory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=memory) as tmp:
        core = batch_core(ARTIFACT, samples, Path(tmp))
    print(f"batch core, digits, {RECORDS:,} records of 1 row, one .npy object each (file://), records/s:")
    print(f"  raw onnxruntime loop (session.run per record, arrays in memory)  {core['raw']:10,.0f}")
    print(
        f"  hand-written loop (np.load, session.run, json.dumps, write)       {core['hand']:10,.0f}  "
        f"({core['hand'] / core['raw']:.2f}x the raw loop)"
    )
    for key, label in (
        ("core10", "10 records per invocation"),
        ("core100", "100 records per invocation"),
        ("core100_unbatched", "100 per invocation, SLIMSERVE_BATCH_MAX_SIZE=1 (no micro-batching)"),
    ):
        print(f"  batch core, {label:55} {core[key]:10,.0f}  ({core[key] / core['raw']:.2f}x the raw loop)")
    try:
        backfill = backfill_rate(Path(tempfile.gettempdir()))
    except ImportError as exc:
        print(f"\nbackfill rate: skipped ({exc}; needs the dev extra: moto)")
        return 0
    print(
        f"\nbackfill against moto (server mode, loopback): {OBJECTS:,} objects -> {backfill['depth']:,} messages in "
        f"{backfill['elapsed']:.1f} s = {backfill['rate']:,.0f} messages/s (moto's SendMessageBatch slows as its queue grows)"
    )
    print(f"  listing + result lookup + notifications alone (messages dropped): {backfill['engine']:,.0f} messages/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
