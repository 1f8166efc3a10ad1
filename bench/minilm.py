"""MiniLM section of `make bench`: all-MiniLM-L6-v2 as people ship it vs as slimserve ships it, one run.

Side by side, on the held-out sentences of examples/minilm (never used for calibration):
  fp32                    the exported graph (mean pooling + L2 inside), onnxruntime
  quantize_dynamic        onnxruntime's `quantize_dynamic(fp32, out)` with its defaults: what most people do
  slimserve tol 0.005     the candidate `slimserve optimize` chooses at tolerance 0.005 (cosine)
  slimserve tol 0.01      ... at tolerance 0.01 (objective: size)
Columns: bytes, mean/min cosine to fp32, p50 latency at batch 1 (tokenize + run, one thread), and cold
start (new process -> first embedding) of the served artifact vs torch eager (transformers AutoModel +
mean pooling), as ratios. Artifacts are reused when present (delete artifacts/minilm to rerun the search).

    python bench/minilm.py            # or: make bench (bench/run.py calls `main`)
Benchmarks are not tests: nothing here asserts a figure.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "examples" / "minilm"
ARTIFACTS = ROOT / "artifacts" / "minilm"
TOLERANCES = (0.005, 0.01)
COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "3"))
LATENCY_RUNS = int(os.environ.get("BENCH_LATENCY_RUNS", "200"))
SENTENCE = "How many people live in the old library near the harbour?"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def artifact(tolerance: float) -> Path:
    folder = ARTIFACTS / f"tol-{tolerance:g}"
    if not (folder / "manifest.json").exists():
        command = [
            sys.executable,
            "-m",
            "slimserve",
            "optimize",
            str(EXAMPLE / "model.yaml"),
            "--tolerance",
            str(tolerance),
            "--out",
            str(folder),
            "--quiet",
        ]
        subprocess.run(command, cwd=ROOT, env=ENV, check=True)
    return folder


def baselines(spec) -> tuple[Path, Path]:
    """The fp32 export and plain `quantize_dynamic` defaults on it, built once."""
    from onnxruntime.quantization import quantize_dynamic

    from optimizer.export import export_fp32

    folder = ARTIFACTS / "baselines"
    fp32, dynamic = folder / "fp32.onnx", folder / "quantize-dynamic-defaults.onnx"
    if not fp32.exists():
        export_fp32(spec, fp32)
    if not dynamic.exists():
        quantize_dynamic(str(fp32), str(dynamic))
    return fp32, dynamic


class Embedder:
    """Tokenize + run, the runtime's path (shared.serving.text + one onnxruntime session) for any model file."""

    def __init__(self, path: Path, encoder, threads: int = 1):
        import onnxruntime as ort

        from shared.serving.local import session_options

        self.session = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"])
        self.encoder = encoder

    def __call__(self, texts) -> np.ndarray:
        return self.session.run(None, self.encoder.encode(texts))[0]


def quality(embed: Embedder, reference: np.ndarray, texts: list[str]) -> tuple[float, float]:
    got = np.concatenate([embed(texts[i : i + 64]) for i in range(0, len(texts), 64)])
    cosine = np.sum(got * reference, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
    return float(cosine.mean()), float(cosine.min())


def p50_ms(embed: Embedder) -> float:
    for _ in range(10):
        embed([SENTENCE])
    samples = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        embed([SENTENCE])
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


RUNTIME_CHILD = """
import sys, numpy as np
from shared.artifact.loading import load_artifact
from shared.serving.local import LocalModel
model = LocalModel.load(load_artifact(sys.argv[1]), '/tmp/slimserve', threads=1)
model.predict({"text": np.array([sys.argv[2].encode()], dtype=object)})
print("answered", flush=True)
"""

TORCH_CHILD = """
import sys, torch
from transformers import AutoModel, AutoTokenizer
torch.set_num_threads(1)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModel.from_pretrained(sys.argv[1]).eval()
batch = tokenizer([sys.argv[2]], return_tensors="pt", truncation=True, max_length=256)
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1).float()
torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
print("answered", flush=True)
"""


def cold_start_s(script: str, *args: str) -> float:
    """Median wall time from spawning a fresh interpreter to its first embedding."""
    times = []
    for _ in range(COLD_RUNS):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=ENV, capture_output=True, text=True)
        if "answered" not in out.stdout:
            raise RuntimeError(f"cold-start child failed: {out.stderr[-2000:]}")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from optimizer.hf_export import encoder_for
    from optimizer.spec import load_spec
    from shared.artifact.loading import read_manifest

    if not (EXAMPLE / "data" / "evaluation.txt").exists():
        subprocess.run([sys.executable, str(EXAMPLE / "sentences.py")], check=True)
    spec = load_spec(EXAMPLE / "model.yaml")
    encoder = encoder_for(spec)
    texts = [line for line in (EXAMPLE / "data" / "evaluation.txt").read_text().splitlines() if line.strip()]
    fp32, dynamic = baselines(spec)
    chosen = {tolerance: artifact(tolerance) for tolerance in TOLERANCES}
    reference = Embedder(fp32, encoder, threads=0)
    reference_out = np.concatenate([reference(texts[i : i + 64]) for i in range(0, len(texts), 64)])

    rows = [("fp32 (onnxruntime)", fp32), ("quantize_dynamic defaults", dynamic)]
    for tolerance, folder in chosen.items():
        manifest = read_manifest(folder)
        rows.append((f"slimserve tol {tolerance:g}: {manifest.chosen.candidate}", folder / manifest.model_file))
    print(f"MiniLM (all-MiniLM-L6-v2), {len(texts)} held-out sentences, onnxruntime CPU, 1 thread, batch 1\n")
    print(f"{'variant':52} {'MB':>7} {'vs fp32':>8} {'cos mean':>9} {'cos min':>8} {'p50 ms':>7} {'speed':>6}")
    base_ms = None
    for name, path in rows:
        embed = Embedder(path, encoder)
        mean, low = quality(embed, reference_out, texts)
        ms = p50_ms(embed)
        base_ms = base_ms or ms
        size = path.stat().st_size
        print(f"{name:52} {size / 1e6:7.2f} {fp32.stat().st_size / size:7.2f}x {mean:9.5f} {low:8.5f} {ms:7.2f} {base_ms / ms:5.2f}x")

    small = chosen[TOLERANCES[-1]]
    runtime = cold_start_s(RUNTIME_CHILD, str(chosen[TOLERANCES[0]]), SENTENCE)
    runtime_small = cold_start_s(RUNTIME_CHILD, str(small), SENTENCE)
    torch_eager = cold_start_s(TORCH_CHILD, str(spec.source.path), SENTENCE)
    print(f"\ncold start, new process -> first embedding (median of {COLD_RUNS}):")
    print(f"  slimserve runtime, tol {TOLERANCES[0]:g} artifact   {runtime:6.2f} s   {torch_eager / runtime:5.1f}x faster than torch eager")
    print(
        f"  slimserve runtime, tol {TOLERANCES[-1]:g} artifact    {runtime_small:6.2f} s   "
        f"{torch_eager / runtime_small:5.1f}x faster than torch eager"
    )
    print(f"  torch eager (transformers AutoModel + mean pooling) {torch_eager:6.2f} s")


if __name__ == "__main__":
    main()
