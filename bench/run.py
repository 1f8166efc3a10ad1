"""`make bench`: the digits artifact through the AWS handler vs torch eager on the same model, one run.

Measures, each in fresh processes or in one process side by side:
  cold start   new process -> first answer (median of N), handler vs torch eager
  warm p50     batch-1 latency in-process, handler (API Gateway v2 event -> serverless-wsgi -> app) vs torch eager
  overhead     the handler's p50 minus a bare `session.run` p50 on the same session and input
Prints ratios. Then bench/batch.py (batch records/s against a raw onnxruntime loop, backfill messages/s
against moto; BENCH_BATCH=0 skips it) and bench/minilm.py. Benchmarks are not tests: nothing here asserts a time.
"""

from __future__ import annotations

import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DIGITS = ROOT / "examples" / "digits"
ARTIFACT = ROOT / "artifacts" / "digits" / "1"
COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "5"))
WARM_CALLS = int(os.environ.get("BENCH_WARM_CALLS", "3000"))


def ensure_artifact() -> None:
    if not (DIGITS / "data" / "model.pt").exists():
        subprocess.run([sys.executable, str(DIGITS / "train.py")], check=True)
    if not (ARTIFACT / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "slimserve", "optimize", str(DIGITS / "model.yaml"), "--out", str(ARTIFACT), "--quiet"],
            cwd=ROOT,
            check=True,
        )


def sample_input() -> np.ndarray:
    return np.load(DIGITS / "data" / "eval.npz")["input"][:1].astype(np.float32)


def api_event(x: np.ndarray) -> dict:
    from tests.eventlib import load_event

    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}]}
    return load_event("apigw-v2-post-json", path="/v2/models/digits/infer", body=body)


# --- cold start: the child scripts ---------------------------------------------------------------

HANDLER_CHILD = """
import json, sys
event = json.loads(sys.stdin.read())
from functions.aws import handler
response = handler.http(event, None)
assert response["statusCode"] == 200, response
print("answered", flush=True)
"""

TORCH_CHILD = """
import sys
import numpy as np
import torch
from torch import nn
{model_source}
model = DigitsCNN()
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
model.eval()
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    model(x).argmax(1)
print("answered", flush=True)
"""


def time_child(cmd: list[str], stdin: str = "", env: dict | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=ROOT, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode or "answered" not in proc.stdout:
        raise SystemExit(f"cold-start child failed: {proc.stderr[-2000:]}")
    return elapsed


def cold_starts(x: np.ndarray, tmp: Path) -> dict[str, float]:
    import torch

    sys.path.insert(0, str(DIGITS))
    from train import DigitsCNN  # the same class the TorchScript was traced from

    scripted = torch.jit.load(str(DIGITS / "data" / "model.pt"))
    torch.save(scripted.state_dict(), tmp / "digits.pt")
    np.save(tmp / "x.npy", x)
    torch_script = TORCH_CHILD.format(model_source=inspect.getsource(DigitsCNN))
    env = {**os.environ, "SLIMSERVE_ARTIFACT": str(ARTIFACT), "POWERTOOLS_LOG_LEVEL": "WARNING", "SLIMSERVE_LOG_LEVEL": "WARNING"}
    event = json.dumps(api_event(x))
    handler = [time_child([sys.executable, "-c", HANDLER_CHILD], event, env) for _ in range(COLD_RUNS)]
    eager = [time_child([sys.executable, "-c", torch_script, str(tmp / "digits.pt"), str(tmp / "x.npy")]) for _ in range(COLD_RUNS)]
    return {"handler": statistics.median(handler), "torch": statistics.median(eager)}


# --- warm latency ----------------------------------------------------------------------------------


def p50_ms(fn, calls: int = WARM_CALLS) -> float:
    for _ in range(min(200, calls)):
        fn()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e6


def wsgi_call(app, path: str, body: bytes):
    """Call the WSGI app directly with a prepared environ: the app's share without any adapter."""
    import io

    from werkzeug.test import EnvironBuilder

    base = EnvironBuilder(path=path, method="POST", data=body, content_type="application/json").get_environ()

    def call():
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(body)
        b"".join(app(environ, lambda status, headers, exc_info=None: None))

    return call


def warm(x: np.ndarray) -> dict[str, float]:
    import contextlib

    import torch

    os.environ.update({"SLIMSERVE_ARTIFACT": str(ARTIFACT), "POWERTOOLS_LOG_LEVEL": "WARNING", "SLIMSERVE_LOG_LEVEL": "WARNING"})
    from train import DigitsCNN

    from functions.aws import handler

    event = api_event(x)
    body = event["body"].encode() if not event.get("isBase64Encoded") else __import__("base64").b64decode(event["body"])
    model = handler.app.plane.repository.get("digits")
    session = model.session
    feed = {model.inputs[0].name: x}

    eager_model = DigitsCNN()
    eager_model.load_state_dict(torch.jit.load(str(DIGITS / "data" / "model.pt")).state_dict())
    eager_model.eval()
    tx = torch.from_numpy(x)

    def eager():
        with torch.no_grad():
            eager_model(tx)

    # The handler prints one EMF metrics line per invocation (as on Lambda); /dev/null keeps the terminal out of it.
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        assert handler.http(event, None)["statusCode"] == 200
        return {
            "handler": p50_ms(lambda: handler.http(event, None)),
            "app": p50_ms(wsgi_call(handler.app, "/v2/models/digits/infer", body)),
            "plane": p50_ms(lambda: handler.app.plane.infer_bytes("digits", None, body, None)),
            "session": p50_ms(lambda: session.run(None, feed)),
            "torch": p50_ms(eager),
        }


def main() -> int:
    ensure_artifact()
    x = sample_input()
    manifest = json.loads((ARTIFACT / "manifest.json").read_text())
    print(f"digits artifact: {manifest['chosen']['candidate']}, {manifest['files'][manifest['model_file']]['bytes']:,} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        cold = cold_starts(x, Path(tmp))
    hot = warm(x)
    rows = [
        (f"cold start, new process -> first answer (median of {COLD_RUNS})", cold["handler"] * 1000, cold["torch"] * 1000),
        ("warm p50 latency, batch 1", hot["handler"], hot["torch"]),
    ]
    print(f"\n{'':58} {'handler ms':>11} {'torch eager ms':>15} {'ratio':>7}")
    for name, ours, theirs in rows:
        print(f"{name:58} {ours:11.3f} {theirs:15.3f} {theirs / ours:6.2f}x")
    overhead = hot["handler"] - hot["session"]
    print(f"\nhandler overhead over bare session.run (p50, batch 1): {overhead:.3f} ms")
    print(
        f"  session.run {hot['session']:.3f} | + data plane (decode/validate/encode) {hot['plane'] - hot['session']:+.3f}"
        f" | + WSGI app {hot['app'] - hot['plane']:+.3f} | + serverless-wsgi and powertools metrics {hot['handler'] - hot['app']:+.3f} ms"
    )
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        from bundle_cold_start import measure

        bundle = measure(ARTIFACT, runs=COLD_RUNS)
    except Exception as exc:  # a benchmark reports what it could not measure and goes on
        bundle = {"skipped": f"{type(exc).__name__}: {exc}"}
    if "skipped" in bundle:
        print(f"\nLambda bundle cold start: skipped ({bundle['skipped']})")
    else:
        ms = bundle.get("process_ms")
        print(
            f"\nLambda bundle, unpacked, clean python3.12 -I -S -B, new process -> first answer (median of {COLD_RUNS}): "
            f"{ms:.0f} ms; torch eager {cold['torch'] * 1000:.0f} ms -> {cold['torch'] * 1000 / ms:.2f}x"
        )
    if os.environ.get("BENCH_BATCH", "1") != "0":
        print("\n== batch throughput and backfill rate (bench/batch.py)", flush=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "batch.py")], cwd=ROOT, check=False)
    minilm = ROOT / "bench" / "minilm.py"
    if minilm.exists() and os.environ.get("BENCH_MINILM", "1") != "0":
        print("\n== MiniLM (bench/minilm.py)", flush=True)
        subprocess.run([sys.executable, str(minilm)], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
