"""Choose among measured candidates: the best by the objective among those within tolerance that fit.

Pure functions over `CandidateResult`s (and each one's `Fit` from optimizer/budget.py, and under the
`cost` objective each one's dollars per million requests from optimizer/cost.py), so the choice is
testable without models. `choose` ranks within tolerance; `decide` adds the budget: only candidates that
fit a function (in the bundle or fetched into /tmp) compete, and when none does the model goes to the
endpoint, with the reason and the candidate that came closest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from optimizer.budget import Budget, Fit
from optimizer.candidates import FP32
from shared.artifact.manifest import CandidateResult, Choice

# fp32 graph rewrites reorder float32 sums; that moves cosine or relative error by ~1e-8, which is
# round-off, not a drop, and must not push the fp32 candidate itself out of a tolerance of 0.
NUMERIC_SLACK = 1e-7

Objective = Literal["size", "latency", "accuracy", "cost"]
_KEYS = {
    "size": lambda r: (r.bytes, r.metrics["drop"]),
    "latency": lambda r: (r.latency_ms, r.bytes),
    "accuracy": lambda r: (r.metrics["drop"], r.bytes),
}
_WORDS = {"size": "smallest", "latency": "fastest", "accuracy": "most accurate", "cost": "cheapest per million requests"}


def _key(objective: Objective, costs: Mapping[str, float] | None) -> Callable[[CandidateResult], tuple]:
    """Cost ties (the same billed milliseconds at the same memory) go to the smaller model; an unpriced
    candidate (its probe failed) ranks last."""
    if objective == "cost":
        priced = costs or {}
        return lambda r: (round(priced.get(r.name, float("inf")), 6), r.bytes, r.metrics["drop"])
    return _KEYS[objective]


def within_tolerance(drop: float, tolerance: float) -> bool:
    return drop <= tolerance + NUMERIC_SLACK


def choose(
    results: Sequence[CandidateResult],
    tolerance: float,
    metric: str,
    objective: Objective = "size",
    costs: Mapping[str, float] | None = None,
) -> Choice:
    """Never returns nothing: fp32 is the fallback when no candidate is within tolerance."""
    ok = [r for r in results if r.within_tolerance and "drop" in r.metrics]
    fp32 = next((r for r in results if r.name == FP32), None)
    if not ok:
        return Choice(FP32, f"no candidate within tolerance {tolerance:g} ({_misses(results, metric)}); kept fp32")
    # ties go to the earlier (cheaper) registry entry: min() keeps the first of equals
    best = min(ok, key=_key(objective, costs))
    head = f"{_WORDS[objective]} within tolerance {tolerance:g}: {best.name}"
    if objective == "cost" and costs and best.name in costs:
        head += f" (${costs[best.name]:.4f} per million requests)"
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


@dataclass(frozen=True)
class Decision:
    choice: Choice
    placement: str  # "function" or "endpoint"
    delivery: str  # "bundle" or "fetch"
    closest: str | None = None  # endpoint only: the within-tolerance candidate nearest to fitting


def decide(
    results: Sequence[CandidateResult],
    fits: Mapping[str, Fit],
    budget: Budget,
    tolerance: float,
    metric: str,
    objective: Objective = "size",
    costs: Mapping[str, float] | None = None,
) -> Decision:
    """Never returns nothing: a function placement when any faithful candidate fits, else the endpoint."""
    ok = [r for r in results if r.within_tolerance and "drop" in r.metrics and r.name in fits]
    fitting = {r.name for r in ok if fits[r.name].delivery}
    if fitting:
        # the faithful-but-unfit leave the race; the rest stay so the reason can name what missed tolerance
        choice = choose([r for r in results if r.name in fitting or not r.within_tolerance], tolerance, metric, objective, costs)
        fit = fits[choice.candidate]
        where = (
            f"fits in the {budget.target} bundle" + (f"; {fit.reason}" if fit.reason else "")
            if fit.delivery == "bundle"
            else f"fetched into /tmp at cold start (~{fit.cold_start_s:.1f} s), too big for the {budget.target} bundle: {fit.reason}"
        )
        return Decision(Choice(choice.candidate, f"{choice.reason}; {where}"), "function", fit.delivery)
    pool = ok or [r for r in results if "drop" in r.metrics]
    best = min(pool, key=_key(objective, costs)) if pool else None
    closest = min(pool, key=lambda r: (r.bytes, r.metrics["drop"])) if pool else None
    if best is None or closest is None:
        return Decision(Choice(FP32, "no candidate could be built or measured; placed on the endpoint"), "endpoint", "bundle")
    why = fits[closest.name].reason if closest.name in fits else "not measured"
    faithful = "within tolerance" if ok else "at all (none within tolerance)"
    reason = (
        f"no candidate {faithful} fits a function on {budget.target}; placed on the endpoint serving {best.name}. "
        f"Closest: {closest.name} ({closest.bytes:,} bytes, {metric} drop {closest.metrics['drop']:.3f}): {why}"
    )
    return Decision(Choice(best.name, reason), "endpoint", "bundle", closest.name)
