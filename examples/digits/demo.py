"""`make demo`: train the digits CNN, optimize it for AWS Lambda, serve it, and ask it through tritonclient.

Prints fp32 vs chosen accuracy (the chosen one measured through the real server), sizes and latency.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACT = ROOT / "artifacts" / "digits" / "1"


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    # Access logs (one JSON line per request) would bury the result; warnings and errors still show.
    env = {**os.environ, "SLIMSERVE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "slimserve", "serve", str(ARTIFACT), "--port", str(port)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready in 60 s")


def main() -> int:
    import tritonclient.http as httpclient

    step("train the digits CNN (scikit-learn's load_digits, offline)")
    subprocess.run([sys.executable, str(HERE / "train.py")], cwd=ROOT, check=True)

    step("optimize for aws-lambda")
    code = subprocess.run(
        [sys.executable, "-m", "slimserve", "optimize", str(HERE / "model.yaml"), "--target", "aws-lambda", "--out", str(ARTIFACT)],
        cwd=ROOT,
    ).returncode
    if code:
        return code
    manifest = json.loads((ARTIFACT / "manifest.json").read_text())
    candidates = {c["name"]: c for c in manifest["candidates"]}
    fp32, chosen = candidates["fp32"], candidates[manifest["chosen"]["candidate"]]

    step("serve it and send the held-out split through tritonclient (binary tensors)")
    evaluation = np.load(HERE / "data" / "eval.npz")
    x, labels = evaluation["input"].astype(np.float32), evaluation["labels"]
    port = free_port()
    server = start_server(port)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        output = manifest["outputs"][0]["name"]
        predictions = []
        for start in range(0, len(x), 64):
            batch = x[start : start + 64]
            tensor = httpclient.InferInput(manifest["inputs"][0]["name"], list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            predictions.append(client.infer("digits", [tensor]).as_numpy(output).argmax(axis=1))
        served_accuracy = float((np.concatenate(predictions) == labels).mean())
        one = httpclient.InferInput(manifest["inputs"][0]["name"], [1, *x.shape[1:]], "FP32")
        timings = []
        for i in range(300):
            one.set_data_from_numpy(x[i % len(x)][None])
            t0 = time.perf_counter()
            client.infer("digits", [one])
            timings.append((time.perf_counter() - t0) * 1000)
        client.close()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=10)

    step("result")
    rows = [
        ("variant", "fp32", chosen["name"]),
        ("accuracy (held-out)", f"{fp32['metrics'].get('accuracy', float('nan')):.4f}", f"{served_accuracy:.4f} (through the server)"),
        ("model bytes", f"{fp32['bytes']:,}", f"{chosen['bytes']:,} ({fp32['bytes'] / chosen['bytes']:.1f}x smaller)"),
        ("onnxruntime p50 ms, batch 1", f"{fp32['latency_ms']:.3f}", f"{chosen['latency_ms']:.3f}"),
        ("HTTP round trip p50 ms, batch 1", "", f"{np.percentile(timings, 50):.3f} (p95 {np.percentile(timings, 95):.3f})"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, a, b in rows:
        print(f"{name:<{width}}  {a:>12}  {b}")
    print(f"chosen: {manifest['chosen']['reason']}")
    print(f"artifact: {ARTIFACT.relative_to(ROOT)}")
    drop_pp = (fp32["metrics"].get("accuracy", served_accuracy) - served_accuracy) * 100
    return 0 if drop_pp <= 0.5 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
