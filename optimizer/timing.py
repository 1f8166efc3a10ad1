"""Batch-1 latency of a candidate timed in alternation with the fp32 model, so load swings cancel out.

On a shared machine the p50 of one model timed alone, then the next, moves by 2x with the neighbours'
load (measured here: digits fp32 from 0.07 to 0.16 ms within minutes); a speed-up read from two such
numbers is noise. `paired` runs short rounds of each model back to back and reports the candidate's
p50, fp32's p50 over the same rounds, and the median of the per-round ratios (what `speedup` means).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from optimizer.data import Dataset
from optimizer.evaluate import TimingConfig
from shared.serving.local import session_options

_PER_ROUND = 20  # runs of each model per round: long enough for a median, short next to a load swing


@dataclass(frozen=True)
class Paired:
    latency_ms: float  # the candidate's p50 (median of round medians)
    baseline_ms: float  # fp32's, over the same rounds
    speedup: float  # median over rounds of fp32 / candidate


def paired(path: Path, baseline: Path, data: Dataset, timing: TimingConfig) -> Paired:
    feed = next(data.head(1).batches(1))
    sessions = [_session(path, timing), _session(baseline, timing) if baseline != path else None]
    for session in filter(None, sessions):
        for _ in range(timing.warmup):
            session.run(None, feed)
    rounds = max(3, timing.runs // _PER_ROUND)
    deadline = time.perf_counter() + 2 * timing.max_seconds  # two models share the time one had alone
    ours, theirs = [], []
    while len(ours) < rounds and (len(ours) < 3 or time.perf_counter() < deadline):
        ours.append(_round(sessions[0], feed))
        theirs.append(_round(sessions[1], feed) if sessions[1] else ours[-1])
    ratios = np.array(theirs) / np.array(ours)
    return Paired(float(np.median(ours) * 1000), float(np.median(theirs) * 1000), float(np.median(ratios)))


def _session(path: Path, timing: TimingConfig) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), sess_options=session_options(timing.threads), providers=["CPUExecutionProvider"])


def _round(session: ort.InferenceSession, feed: dict) -> float:
    samples = []
    for _ in range(_PER_ROUND):
        start = time.perf_counter()
        session.run(None, feed)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))
