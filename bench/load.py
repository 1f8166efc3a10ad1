"""`make load`: throughput against the raw onnxruntime limit, then a soak, all on loopback, all bounded.

    python bench/load.py [--minilm DIR] [--digits DIR] [--compare-s 20] [--soak-s 120] [--clients 8]

1. MiniLM, batch 1, for two artifacts: the text artifact users deploy (a sentence in, tokenized by the
   runtime) and a token-id stand-in derived from it (same model file, its token tensors as inputs, 8 ids).
   Each: the raw limit (W processes x 1 intra-op thread, tokenizing where the artifact does and calling
   `session.run` in a tight loop, W = the server's default worker count), then `slimserve serve` at its
   defaults without and with the dynamic batcher, `--clients` concurrent keep-alive clients each; the
   three legs alternate twice and each figure is the mean of both rounds, so a neighbour's load on this
   shared machine lands on all three alike. Printed as ratios to the raw limit, with the server's cost per
   request over the bare loop (W / server rate - W / raw rate).
2. Soak: the digits artifact and the MiniLM artifact (batcher on), `--clients` clients for `--soak-s`
   seconds each: requests/s, p50/p95/p99, errors, RSS of the server's processes at start, at 1 min and at
   the end.

The load generator is one process multiplexing its connections with `selectors` and sending prebuilt
requests, so it takes as little of the machine's CPU (which it shares with the server) as a Python
client can. Every response is checked for status 200; anything else, or a dropped connection, is an
error. Nothing here asserts a time: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DIGITS = ROOT / "examples" / "digits"


# --- the load generator --------------------------------------------------------------------------


class _Conn:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.sent = 0.0


def load(port: int, request: bytes, clients: int, seconds: float, on_tick=None) -> dict:
    """`clients` connections, each sending `request` again as soon as its answer is in, for `seconds`."""
    selector = selectors.DefaultSelector()
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + seconds
    for _ in range(clients):
        conn = _Conn(port)
        conn.sent = time.perf_counter()
        conn.sock.sendall(request)
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    live, next_tick = clients, start + 1.0
    while live:
        now = time.perf_counter()
        if on_tick is not None and now >= next_tick:
            on_tick(now - start)
            next_tick += 1.0
        for key, _ in selector.select(1.0):
            conn = key.data
            chunk = conn.sock.recv(1 << 16)
            if not chunk:  # the server closed the connection: an error, and a new connection
                errors += 1
                selector.unregister(conn.sock)
                conn.sock.close()
                if time.perf_counter() < end:
                    conn = _Conn(port)
                    conn.sent = time.perf_counter()
                    conn.sock.sendall(request)
                    selector.register(conn.sock, selectors.EVENT_READ, conn)
                else:
                    live -= 1
                continue
            conn.buf += chunk
            head_end = conn.buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            head = conn.buf[:head_end].lower()
            at = head.find(b"\r\ncontent-length:") + 17  # not Inference-Header-Content-Length
            line_end = head.find(b"\r\n", at)
            length = int(head[at : line_end if line_end > 0 else None])
            if len(conn.buf) < head_end + 4 + length:
                continue
            now = time.perf_counter()
            latencies.append(now - conn.sent)
            if not head.startswith(b"http/1.1 200"):
                errors += 1
            conn.buf = conn.buf[head_end + 4 + length :]
            if now >= end or b"connection: close" in head:
                selector.unregister(conn.sock)
                conn.sock.close()
                if now >= end:
                    live -= 1
                    continue
                conn = _Conn(port)
                selector.register(conn.sock, selectors.EVENT_READ, conn)
            conn.sent = now
            conn.sock.sendall(request)
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def http_request(path: str, body: bytes, header_length: int | None = None) -> bytes:
    kind = "octet-stream" if header_length else "json"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/{kind}\r\nContent-Length: {len(body)}\r\n"
    if header_length:
        head += f"Inference-Header-Content-Length: {header_length}\r\n"
    return (head + "\r\n").encode() + body


# --- requests --------------------------------------------------------------------------------------


SENTENCE = "A man is eating food."
TOKEN_IDS = [101, 1037, 2158, 2003, 5983, 2833, 1012, 102]  # SENTENCE through MiniLM's tokenizer, [CLS] .. [SEP]


def token_feed(names: list[str]) -> dict[str, np.ndarray]:
    """Batch-1 token ids of SENTENCE under a graph's input names (ids, attention mask, token types)."""
    ids = np.array([TOKEN_IDS], dtype=np.int64)
    return {n: np.ones_like(ids) if "mask" in n else np.zeros_like(ids) if "type" in n else ids for n in names}


def minilm_request(artifact: Path) -> bytes:
    """Token ids in the binary extension for a token-id artifact; the sentence itself for a text artifact."""
    from shared.protocol.codec import encode_request

    manifest = json.loads((artifact / "manifest.json").read_text())
    path = f"/v2/models/{manifest['name']}/infer"
    inputs = manifest["inputs"]
    if [i["datatype"] for i in inputs] == ["BYTES"]:
        body = {
            "inputs": [{"name": inputs[0]["name"], "datatype": "BYTES", "shape": [1], "data": [SENTENCE]}],
            "parameters": {"binary_data_output": True},
        }
        return http_request(path, json.dumps(body).encode())
    body, header_length = encode_request(token_feed([i["name"] for i in inputs]), binary_output=True)
    return http_request(path, body, header_length)


def digits_request(model: str) -> bytes:
    x = np.load(DIGITS / "data" / "eval.npz")["input"][:1].astype(np.float32)
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}]}).encode()
    return http_request(f"/v2/models/{model}/infer", body)


# --- the raw onnxruntime limit ---------------------------------------------------------------------


def _raw_loop(artifact: str, seconds: float, ready, go, out) -> None:
    """One process of the raw limit: the artifact's own model file, tokenizing per call for a text model."""
    from shared.artifact.loading import load_artifact
    from shared.serving.local import LocalModel

    model = LocalModel.load(load_artifact(artifact), "/tmp/slimserve", threads=1)  # the server's session options
    sentence = np.array([SENTENCE.encode()], dtype=object)
    ids = token_feed([i.name for i in model.session.get_inputs()])

    def call():
        model.session.run(None, model.text.encode(sentence) if model.text is not None else ids)

    for _ in range(20):
        call()
    ready.release()
    go.wait()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        calls += 1
    out.put(calls / (time.perf_counter() - start))


def raw_limit(artifact: Path, processes: int, seconds: float) -> float:
    """Calls per second of `processes` processes, each one intra-op thread, batch 1, in a tight loop."""
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_raw_loop, args=(str(artifact), seconds, ready, go, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()
    go.set()
    total = sum(out.get() for _ in procs)
    for proc in procs:
        proc.join()
    return total


# --- the server ------------------------------------------------------------------------------------


class Server:
    def __init__(self, artifact: Path, *args: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {**os.environ, "SLIMSERVE_LOG_LEVEL": os.environ.get("SLIMSERVE_LOG_LEVEL", "INFO")}
        self.log = open(os.devnull, "w")
        cmd = [sys.executable, "-m", "slimserve", "serve", str(artifact), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {' '.join(cmd)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def rss_mib(self) -> float:
        """Resident memory of the server and all its worker processes."""
        return sum(_rss_kib(pid) for pid in _tree(self.proc.pid)) / 1024

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.close()


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return pids


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def warm(port: int, request: bytes, clients: int) -> None:
    load(port, request, clients, 2.0)


# --- the runs ------------------------------------------------------------------------------------


def token_id_stand_in(text_artifact: Path, folder: Path) -> Path:
    """The text artifact's model file served as is, its token tensors as the inputs (no tokenizer)."""
    import dataclasses
    import shutil

    from shared.artifact.loading import file_entries, read_manifest, write_manifest
    from shared.artifact.manifest import TensorSpec

    manifest = read_manifest(text_artifact)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(text_artifact / manifest.model_file, folder / manifest.model_file)
    feeds = manifest.extra["text"]["feeds"]
    inputs = tuple(TensorSpec(name, "INT64", (-1, -1)) for name in feeds)
    write_manifest(
        folder,
        dataclasses.replace(
            manifest,
            name=f"{manifest.name}-ids",
            inputs=inputs,
            files=file_entries(folder, [manifest.model_file]),
            extra={k: v for k, v in manifest.extra.items() if k != "text"},
        ),
    )
    return folder


def compare(minilm: Path, clients: int, seconds: float, batch: int) -> dict:
    from shared.server.serve import default_workers

    workers = default_workers()
    request = minilm_request(minilm)
    totals = {"raw": 0.0, "plain": 0.0, "batched": 0.0}
    detail: dict[str, list] = {"plain": [], "batched": []}
    for _ in range(2):  # alternating rounds: a neighbour's burst lands on every leg alike
        totals["raw"] += raw_limit(minilm, workers, seconds / 2)
        for leg, extra in (("plain", ()), ("batched", ("--max-batch-size", str(batch)))):
            server = Server(minilm, *extra)
            try:
                warm(server.port, request, clients)
                result = load(server.port, request, clients, seconds / 2)
            finally:
                server.stop()
            totals[leg] += result["rps"]
            detail[leg].append(result)
    raw = totals["raw"] / 2
    overhead_ms = lambda rps: (workers / rps - workers / raw) * 1000  # noqa: E731
    return {
        "workers": workers,
        "raw_calls_per_s": raw,
        "plain_rps": totals["plain"] / 2,
        "batched_rps": totals["batched"] / 2,
        "plain_overhead_ms": overhead_ms(totals["plain"] / 2),
        "batched_overhead_ms": overhead_ms(totals["batched"] / 2),
        "plain_ratio": totals["plain"] / 2 / raw,
        "batched_ratio": totals["batched"] / 2 / raw,
        "errors": sum(r["errors"] for rs in detail.values() for r in rs),
        "batched_p50_ms": float(np.mean([r["p50_ms"] for r in detail["batched"]])),
        "plain_p50_ms": float(np.mean([r["p50_ms"] for r in detail["plain"]])),
    }


def soak(artifact: Path, request: bytes, clients: int, seconds: float, *server_args: str) -> dict:
    server = Server(artifact, *server_args)
    try:
        warm(server.port, request, clients)
        rss = {"start": server.rss_mib()}

        def tick(elapsed: float) -> None:
            if "1min" not in rss and elapsed >= 60:
                rss["1min"] = server.rss_mib()

        result = load(server.port, request, clients, seconds, on_tick=tick)
        rss["end"] = server.rss_mib()
    finally:
        code = server.stop()
    rss.setdefault("1min", rss["end"])
    return {**result, "rss_mib": rss, "rss_growth_1min_to_end": rss["end"] / rss["1min"] - 1, "exit_code": code}


def _model_name(artifact: Path) -> str:
    return json.loads((artifact / "manifest.json").read_text())["name"]


def ensure_digits(folder: Path) -> None:
    if (folder / "manifest.json").exists():
        return
    if not (DIGITS / "data" / "model.pt").exists():
        subprocess.run([sys.executable, str(DIGITS / "train.py")], check=True)
    subprocess.run(
        [sys.executable, "-m", "slimserve", "optimize", str(DIGITS / "model.yaml"), "--out", str(folder), "--quiet"], cwd=ROOT, check=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minilm",
        type=Path,
        default=ROOT / "artifacts" / "minilm" / "1",
        help="MiniLM text artifact (slimserve optimize examples/minilm/model.yaml); a token-id stand-in is derived from it",
    )
    parser.add_argument("--digits", type=Path, default=ROOT / "artifacts" / "digits" / "1")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--compare-s", type=float, default=20.0, help="seconds per leg of the throughput comparison (two rounds of half)")
    parser.add_argument("--soak-s", type=float, default=120.0, help="seconds of each soak run")
    parser.add_argument("--batch", type=int, default=8, help="--max-batch-size of the batched server")
    parser.add_argument("--skip", nargs="*", default=[], choices=["compare", "digits", "minilm"])
    args = parser.parse_args(argv)
    report: dict = {"cpus": len(os.sched_getaffinity(0)), "clients": args.clients}
    have_minilm = (args.minilm / "manifest.json").exists()
    if not have_minilm:
        print(f"no MiniLM artifact at {args.minilm} (--minilm DIR): its legs are skipped", file=sys.stderr)
    if have_minilm and "compare" not in args.skip:
        import tempfile

        ids = token_id_stand_in(args.minilm, Path(tempfile.mkdtemp(prefix="minilm-ids-")))
        for label, artifact in (("token ids", ids), ("text", args.minilm)):
            report[f"throughput {label}"] = t = compare(artifact, args.clients, args.compare_s, args.batch)
            print(
                f"MiniLM {label}, batch 1, {args.clients} clients, {t['workers']} workers: raw {t['raw_calls_per_s']:.0f} calls/s; "
                f"server {t['plain_rps']:.0f} req/s ({t['plain_ratio']:.2f}x, +{t['plain_overhead_ms']:.2f} ms a request) without "
                f"the batcher, {t['batched_rps']:.0f} req/s ({t['batched_ratio']:.2f}x) with it; errors {t['errors']}",
                flush=True,
            )
    if "digits" not in args.skip:
        ensure_digits(args.digits)
        report["soak_digits"] = s = soak(args.digits, digits_request(_model_name(args.digits)), args.clients, args.soak_s)
        _print_soak("digits", s)
    if have_minilm and "minilm" not in args.skip:
        report["soak_minilm"] = s = soak(
            args.minilm, minilm_request(args.minilm), args.clients, args.soak_s, "--max-batch-size", str(args.batch)
        )
        _print_soak("MiniLM (batcher on)", s)
    print(json.dumps(report, indent=2))
    return 0


def _print_soak(name: str, s: dict) -> None:
    rss = s["rss_mib"]
    print(
        f"soak {name}: {s['rps']:.0f} req/s over {s['seconds']:.0f} s, "
        f"p50 {s['p50_ms']:.2f} / p95 {s['p95_ms']:.2f} / p99 {s['p99_ms']:.2f} ms, "
        f"errors {s['errors']}, RSS {rss['start']:.0f} -> {rss['1min']:.0f} (1 min) -> {rss['end']:.0f} MiB (end), "
        f"growth 1 min -> end {s['rss_growth_1min_to_end'] * 100:+.1f}%",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
