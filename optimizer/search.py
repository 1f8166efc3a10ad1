"""Choose among measured candidates: the best by the objective among those within tolerance.

Pure functions over `CandidateResult`s, so the choice is testable without models. The later budget
search adds a "fits the target" filter beside `within_tolerance`; the shape stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from optimizer.candidates import FP32
from shared.manifest import CandidateResult, Choice

# fp32 graph rewrites reorder float32 sums; that moves cosine or relative error by ~1e-8, which is
# round-off, not a drop, and must not push the fp32 candidate itself out of a tolerance of 0.
NUMERIC_SLACK = 1e-7

Objective = Literal["size", "latency", "accuracy"]
_KEYS = {
    "size": lambda r: (r.bytes, r.metrics["drop"]),
    "latency": lambda r: (r.latency_ms, r.bytes),
    "accuracy": lambda r: (r.metrics["drop"], r.bytes),
}
_WORDS = {"size": "smallest", "latency": "fastest", "accuracy": "most accurate"}


def within_tolerance(drop: float, tolerance: float) -> bool:
    return drop <= tolerance + NUMERIC_SLACK


def choose(results: Sequence[CandidateResult], tolerance: float, metric: str, objective: Objective = "size") -> Choice:
    """Never returns nothing: fp32 is the fallback when no candidate is within tolerance."""
    ok = [r for r in results if r.within_tolerance and "drop" in r.metrics]
    fp32 = next((r for r in results if r.name == FP32), None)
    if not ok:
        return Choice(FP32, f"no candidate within tolerance {tolerance:g} ({_misses(results, metric)}); kept fp32")
    # ties go to the earlier (cheaper) registry entry: min() keeps the first of equals
    best = min(ok, key=_KEYS[objective])
    head = f"{_WORDS[objective]} within tolerance {tolerance:g}: {best.name}"
    if best.name == FP32 or fp32 is None or not best.bytes:
        missed = _misses(results, metric)
        return Choice(best.name, f"{head}{f' ({missed})' if missed else ''}")
    ratio = fp32.bytes / best.bytes
    return Choice(best.name, f"{head}, {ratio:.1f}x smaller than fp32, {metric} drop {best.metrics['drop']:.3f}")


def _misses(results: Sequence[CandidateResult], metric: str) -> str:
    """Why the compressed candidates were turned down, for the reason sentence."""
    parts = []
    for r in results:
        if r.within_tolerance or r.name == FP32:
            continue
        parts.append(f"{r.name} {metric} drop {r.metrics['drop']:.3f}" if "drop" in r.metrics else f"{r.name} failed")
    return "; ".join(parts)
