"""Measure a candidate against the fp32 reference: the task metric on held-out data, latency, bytes.

The task metric is computed on the first output of the spec:
- classification: `accuracy` vs `labels` when the evaluation data has them, always `agreement`
  (top-1 equal to the fp32 model's); the tolerance applies to accuracy, else agreement;
- embedding: `cosine`, the mean cosine similarity of each sample's output to the fp32 output;
- regression: `rel_error`, the mean of |y - y_fp32| / |y_fp32| per sample (L2 norms).
`drop` is always "how much worse than fp32", so the search compares one number whatever the task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from optimizer.data import Dataset
from shared.serving.local import session_options

_TINY = 1e-12


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = 20
    runs: int = 300
    max_seconds: float = 3.0  # a slow model gets fewer runs rather than a slow optimize
    threads: int = 1  # a function at common memory sizes has about one vCPU; also steadier numbers


@dataclass(frozen=True)
class Measurement:
    metrics: dict[str, float]  # task metrics plus `drop`
    latency_ms: float  # p50 at batch 1
    bytes: int


def primary_metric(task: str, has_labels: bool) -> tuple[str, bool]:
    """The metric the tolerance applies to, and whether higher is better."""
    if task == "classification":
        return ("accuracy" if has_labels else "agreement"), True
    if task == "embedding":
        return "cosine", True
    return "rel_error", False


def run_model(path: Path, data: Dataset, output: str, batch_size: int = 256) -> np.ndarray:
    session = ort.InferenceSession(str(path), sess_options=session_options(0), providers=["CPUExecutionProvider"])
    fixed = {shape[0] for shape in (i.shape for i in session.get_inputs()) if shape and isinstance(shape[0], int)}
    size = fixed.pop() if len(fixed) == 1 else batch_size
    parts = [session.run([output], feed)[0] for feed in data.batches(size)]
    return np.concatenate(parts, axis=0)


def task_metrics(task: str, outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    # float64 throughout, so float32 round-off in the metric itself never reads as a drop
    outputs = outputs.astype(np.float64).reshape(len(outputs), -1)
    reference = reference.astype(np.float64).reshape(len(reference), -1)
    if task == "classification":
        predicted = outputs.argmax(axis=1)
        metrics = {"agreement": float(np.mean(predicted == reference.argmax(axis=1)))}
        if labels is not None:
            metrics["accuracy"] = float(np.mean(predicted == labels))
        return metrics
    if task == "embedding":
        dots = np.sum(outputs * reference, axis=1)
        norms = np.linalg.norm(outputs, axis=1) * np.linalg.norm(reference, axis=1)
        return {"cosine": float(np.mean(dots / np.maximum(norms, _TINY)))}
    errors = np.linalg.norm(outputs - reference, axis=1) / np.maximum(np.linalg.norm(reference, axis=1), _TINY)
    return {"rel_error": float(np.mean(errors))}


def with_drop(task: str, metrics: dict[str, float], reference: dict[str, float], has_labels: bool) -> dict[str, float]:
    name, higher_is_better = primary_metric(task, has_labels)
    change = reference[name] - metrics[name]
    return {**metrics, "drop": change if higher_is_better else -change}


def latency_ms(path: Path, data: Dataset, timing: TimingConfig) -> float:
    session = ort.InferenceSession(str(path), sess_options=session_options(timing.threads), providers=["CPUExecutionProvider"])
    feed = next(data.head(1).batches(1))
    for _ in range(timing.warmup):
        session.run(None, feed)
    samples = []
    deadline = time.perf_counter() + timing.max_seconds
    while len(samples) < timing.runs and (len(samples) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        session.run(None, feed)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples) * 1000)


@dataclass(frozen=True, eq=False)
class Reference:
    """The fp32 model's outputs and metrics on the evaluation data: what every candidate is held to."""

    task: str
    data: Dataset
    output: str  # the output the task metric reads
    outputs: np.ndarray
    metrics: dict[str, float]

    @classmethod
    def of(cls, path: Path, task: str, data: Dataset, output: str) -> Reference:
        outputs = run_model(path, data, output)
        return cls(task, data, output, outputs, task_metrics(task, outputs, outputs, data.labels))

    @property
    def metric(self) -> str:
        return primary_metric(self.task, self.data.labels is not None)[0]


def measure(path: Path, reference: Reference, timing: TimingConfig) -> Measurement:
    outputs = run_model(path, reference.data, reference.output)
    metrics = task_metrics(reference.task, outputs, reference.outputs, reference.data.labels)
    return Measurement(
        metrics=with_drop(reference.task, metrics, reference.metrics, reference.data.labels is not None),
        latency_ms=latency_ms(path, reference.data, timing),
        bytes=path.stat().st_size,
    )
