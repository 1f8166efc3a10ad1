"""`make demo-text`: optimize all-MiniLM-L6-v2 (from the PyPI package, no hub) for AWS Lambda, serve it, and
ask it for sentence embeddings with `slimserve invoke --text`.

    python examples/minilm/demo.py [--candidates int8-dynamic,int4-weight-only-b128]

The default candidates keep the search to a few minutes on 2 cores; `--candidates ""` tries them all
(about a quarter of an hour). Prints the choice, the invoke answer and how alike the sentences came out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACT = ROOT / "artifacts" / "minilm" / "1"
QUICK = "int8-dynamic,int4-weight-only-b128"
TEXTS = ["A man is playing a guitar.", "Someone strums a guitar on stage.", "The quarterly budget was approved."]


def slimserve(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimserve", *args], cwd=ROOT, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "SLIMSERVE_LOG_LEVEL": "WARNING"}  # the access lines would bury the answer
    cmd = [sys.executable, "-m", "slimserve", "serve", str(ARTIFACT), "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready in 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=QUICK, help=f"candidates to try (default {QUICK}; empty: all)")
    args = parser.parse_args()

    print("\n== optimize all-MiniLM-L6-v2 for aws-lambda", flush=True)
    choose = ["--candidates", args.candidates] if args.candidates else []
    spec = str(HERE / "model.yaml")
    if slimserve("optimize", spec, "--out", str(ARTIFACT), "--quiet", *choose).returncode:
        return 1
    manifest = json.loads((ARTIFACT / "manifest.json").read_text())

    print("\n== serve it and ask for embeddings: slimserve invoke URL minilm --text ...", flush=True)
    port = free_port()
    server = start_server(port)
    try:
        texts = [arg for text in TEXTS for arg in ("--text", text)]
        answer = slimserve("invoke", f"http://127.0.0.1:{port}", "minilm", *texts, capture_output=True, text=True)
        print(answer.stdout or answer.stderr, flush=True)
        if answer.returncode:
            return answer.returncode
        sys.path.insert(0, str(ROOT))
        from shared.client import InferenceClient

        client = InferenceClient(f"http://127.0.0.1:{port}")
        embeddings = client.infer("minilm", client.inputs_for("minilm", texts=TEXTS)).outputs["embedding"]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=15)

    print("== result")
    similar = float(np.dot(embeddings[0], embeddings[1]))
    unrelated = float(np.dot(embeddings[0], embeddings[2]))
    print(f"cosine({TEXTS[0]!r}, {TEXTS[1]!r}) = {similar:.3f}")
    print(f"cosine({TEXTS[0]!r}, {TEXTS[2]!r}) = {unrelated:.3f}")
    print(f"chosen: {manifest['chosen']['reason']}")
    print(f"artifact: {ARTIFACT.relative_to(ROOT)} (placement {manifest['placement']}, delivery {manifest['delivery']})")
    return 0 if similar > unrelated else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
