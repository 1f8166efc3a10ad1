"""Measure what serving a candidate takes: peak RSS and session creation, in a fresh process per candidate.

The child imports only the runtime (onnxruntime, numpy and `shared`, as the function does), creates the
session with the runtime's own session options (shared/serving/local.py `session_options`), runs the model
once at half the probe batch and once at the full one, and reports its own peak RSS (VmHWM: what the kernel
counted for that process alone, never the optimizer's) after each. The optimizer's process holds the fp32
reference, every candidate and torch: measured there, memory would say nothing about the function's.

The batch is the largest the request limits admit (shared/protocol/limits.py: SLIMSERVE_MAX_REQUEST_BATCH
rows and SLIMSERVE_MAX_ELEMENTS elements, at their defaults), except for text: a text is one element on the
wire but up to `max_length` tokens in the graph, and 1,024 texts of 256 tokens take minutes on one core, so
the probe runs at most `PROBE_TOKENS` tokens (MiniLM: 32 texts of 256 tokens). The peak at the limit is then
extrapolated linearly in rows from the two runs (activations grow with the batch at a fixed length), stated
as an extrapolation; the memory recommended covers the measured batch.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.protocol.limits import Limits

PROBE_TOKENS = 8192
TIMEOUT_S = 900
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plan:
    batch: int  # rows of the largest run
    limit_batch: int  # rows the request limits admit
    length: int  # tokens per text (text models), 1 otherwise: what a dynamic non-batch axis is set to
    how: str


@dataclass(frozen=True)
class Serving:
    peak_rss_bytes: int  # at `batch` rows
    half_peak_rss_bytes: int  # at batch // 2 rows (the first run)
    session_create_s: float
    import_s: float  # onnxruntime + numpy + shared, in the child
    run_s: float  # the run at `batch` rows, one onnxruntime thread
    batch: int
    limit_batch: int
    how: str

    @property
    def at_limit_bytes(self) -> int:
        """The peak extrapolated to `limit_batch` rows (the measured one when the probe ran at the limit)."""
        if self.limit_batch <= self.batch:
            return self.peak_rss_bytes
        half = max(1, self.batch // 2)
        per_row = max(0.0, (self.peak_rss_bytes - self.half_peak_rss_bytes) / max(1, self.batch - half))
        return round(self.peak_rss_bytes + per_row * (self.limit_batch - self.batch))

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "session_create_s": round(self.session_create_s, 4),
            "import_s": round(self.import_s, 4),
            "run_s": round(self.run_s, 4),
            "peak_rss_at_limit_bytes": self.at_limit_bytes,
        }


def plan(input_shapes: list[tuple[int, ...]], text_length: int | None, limits: Limits | None = None) -> Plan:
    """The probe's batch for a model with these spec input shapes (-1: dynamic); `text_length`: a text
    model's max_length in tokens; `limits`: the runtime's defaults unless given."""
    limits = limits or Limits()
    if text_length:
        limit = min(limits.max_request_batch, limits.max_elements)
        batch = max(1, min(limit, PROBE_TOKENS // text_length))
        how = f"{batch} texts of {text_length} tokens (at most {PROBE_TOKENS:,} tokens; the limits admit {limit:,} texts)"
        return Plan(batch, limit, text_length, how)
    row = sum(math.prod(max(1, d) for d in shape[1:]) for shape in input_shapes) or 1
    limit = max(1, min(limits.max_request_batch, limits.max_elements // row))
    bounds = f"SLIMSERVE_MAX_REQUEST_BATCH {limits.max_request_batch:,}, MAX_ELEMENTS {limits.max_elements:,}"
    how = f"{limit} rows of {row:,} elements ({bounds})"
    return Plan(limit, limit, 1, how)


def measure(model: Path, probe: Plan, threads: int = 1) -> Serving:
    """Raises RuntimeError with the child's last line when it fails (out of memory, a missing kernel)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH", "")]))}
    args = json.dumps({"batches": [max(1, probe.batch // 2), probe.batch], "length": probe.length, "threads": threads})
    try:
        command = [sys.executable, "-m", "optimizer.serving_probe", str(model), args]
        proc = subprocess.run(command, env=env, cwd=_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the serving probe ran past {TIMEOUT_S} s") from None
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise RuntimeError(f"the serving probe failed: {said[:200]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return Serving(
        out["peaks"][1], out["peaks"][0], out["create_s"], out["import_s"], out["run_s"], probe.batch, probe.limit_batch, probe.how
    )


def _peak_rss() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _child(model: str, raw: str) -> None:
    args = json.loads(raw)
    start = time.perf_counter()
    import numpy as np
    import onnxruntime as ort

    from shared.serving.local import session_options

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    session = ort.InferenceSession(model, sess_options=session_options(args["threads"]), providers=["CPUExecutionProvider"])
    create_s = time.perf_counter() - start
    peaks, run_s = [], 0.0
    for batch in args["batches"]:
        feed = {i.name: _tensor(np, i, batch, args["length"]) for i in session.get_inputs()}
        start = time.perf_counter()
        session.run(None, feed)
        run_s = time.perf_counter() - start
        peaks.append(_peak_rss())
    print(json.dumps({"peaks": peaks, "create_s": create_s, "import_s": import_s, "run_s": run_s}))


_DTYPES = {
    "float": "float32",
    "float16": "float16",
    "double": "float64",
    "int64": "int64",
    "int32": "int32",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
    "string": "object",
}


def _tensor(np, node, batch: int, length: int):
    """A full-size input: the batch axis at `batch`, other dynamic axes at `length` (tokens), values valid
    for every kind of input (ones are a token id, a mask and a segment id alike)."""
    dims = [d if isinstance(d, int) and d > 0 else (batch if axis == 0 else length) for axis, d in enumerate(node.shape)]
    dtype = _DTYPES.get(node.type.removeprefix("tensor(").rstrip(")"), "float32")
    if dtype == "object":
        return np.full(dims, "x", dtype=object)
    if dtype.startswith("float"):
        return np.random.default_rng(0).random(dims).astype(dtype)
    return np.ones(dims, dtype=dtype)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
