"""Batch-1 (and larger) latency of candidates vs fp32 on a busy machine: interleaved rounds, one thread.

    python bench/quantized_latency.py [SPEC] [--candidates a,b] [--rounds 30] [--runs 300] [--batches 1,32]

Builds the named registry candidates (default: fp32 and the three static QDQ calibrations) plus two
static-QDQ variants worth comparing (per-tensor weights; dense layers only), from the spec's source.
Every round times each model back to back, so a load spike hits all of them alike; the figure is the
median over rounds of fp32's round median divided by the candidate's, with the inter-quartile range.
Sequential timing (one model, then the next) on a shared 2-core box swings by 2x; this does not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optimizer import candidates as registry  # noqa: E402
from optimizer.candidates import Candidate, QuantPreProcess, StaticQDQ  # noqa: E402
from optimizer.data import load_dataset  # noqa: E402
from optimizer.evaluate import Reference, run_model, task_metrics  # noqa: E402
from optimizer.export import export_fp32  # noqa: E402
from optimizer.spec import load_spec  # noqa: E402
from optimizer.steps import StepContext  # noqa: E402
from shared.serving.local import session_options  # noqa: E402

DEFAULT = ("fp32", "int8-static-qdq-minmax", "int8-static-qdq-entropy", "int8-static-qdq-percentile")
VARIANTS = {
    "qdq-minmax-per-tensor": Candidate("qdq-minmax-per-tensor", (QuantPreProcess(), StaticQDQ(per_channel=False))),
    "qdq-minmax-dense-only": Candidate("qdq-minmax-dense-only", (QuantPreProcess(), StaticQDQ(op_types=("Gemm", "MatMul")))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "examples" / "digits" / "model.yaml"))
    parser.add_argument("--candidates", default=",".join(DEFAULT))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=300, help="timed runs per model per round at batch 1 (fewer for larger batches)")
    parser.add_argument("--batches", default="1,32")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    plans = [registry.REGISTRY[n] for n in args.candidates.split(",")] + list(VARIANTS.values())
    with tempfile.TemporaryDirectory(prefix="slimserve-bench-") as tmp:
        work = Path(tmp)
        reference = export_fp32(spec, work / "reference.onnx")
        ctx = StepContext(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=work)
        evaluation = load_dataset(spec, "evaluation")
        ref = Reference.of(reference, spec.task, evaluation, spec.outputs[0].name)
        paths = {c.name: c.build(reference, ctx) for c in plans}
        metric = ref.metric
        print(f"{spec.name}: onnxruntime {ort.__version__}, 1 intra-op thread, {args.rounds} interleaved rounds")
        print(f"{'candidate':<28}{'bytes':>11}{metric:>10}{'drop':>8}")
        for name, path in paths.items():
            outputs = run_model(path, evaluation, spec.outputs[0].name)
            value = task_metrics(spec.task, outputs, ref.outputs, evaluation.labels)[metric]
            print(f"{name:<28}{path.stat().st_size:>11,}{value:>10.4f}{ref.metrics[metric] - value:>8.4f}")
        sessions = {
            name: ort.InferenceSession(str(p), sess_options=session_options(1), providers=["CPUExecutionProvider"])
            for name, p in paths.items()
        }
        for batch in (int(b) for b in args.batches.split(",")):
            _bench(sessions, next(evaluation.head(batch).batches(batch)), batch, args.rounds, max(10, args.runs // batch))


def _bench(sessions: dict, feed: dict, batch: int, rounds: int, runs: int) -> None:
    for session in sessions.values():
        for _ in range(50):
            session.run(None, feed)
    medians = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, feed)
                samples.append(time.perf_counter() - start)
            medians[name].append(float(np.median(samples)))
    base = np.array(medians["fp32"])
    print(f"\nbatch {batch}: p50 ms (median of round medians); speed-up = fp32 / candidate per round, median [IQR]")
    for name, values in medians.items():
        ratios = base / np.array(values)
        q1, q2, q3 = np.percentile(ratios, [25, 50, 75])
        print(f"  {name:<28}{np.median(values) * 1000:>9.4f} ms   {q2:5.2f}x [{q1:.2f}-{q3:.2f}]")


if __name__ == "__main__":
    main()
