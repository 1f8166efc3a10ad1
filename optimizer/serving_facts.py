"""Per candidate, what serving it takes and costs on the target: the measured peak RSS and session creation
(optimizer/serving_probe.py), the memory to give the function, the cold start it makes, and dollars per
million requests (optimizer/cost.py). The chosen candidate's become the manifest's `extra.serving`, which the
deploy reads (infra/aws/bundle-plugin.js: the Lambda memorySize when the `memorySize` param is `auto`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from infra import limits
from infra.prices import PRICES
from optimizer.budget import HEADROOM, Budget, Fit, Footprint, beyond_init
from optimizer.cost import cost_per_million, recommended_memory_mb
from optimizer.serving_probe import Plan, Serving, measure
from shared.artifact.manifest import CandidateResult

ARCHES = {"aws-lambda": ("x86_64", "arm64")}  # the cost objective ranks the first (serverless.yml's default)
MEMORY_RULE = f"measured peak RSS x {HEADROOM:g} headroom, rounded up to the target's next memory setting"


def probe_all(runnables: Mapping[str, Path], plan: Plan, threads: int) -> tuple[dict[str, Serving], dict[str, str]]:
    """Each candidate in its own fresh process; a probe that fails leaves that candidate on the estimates."""
    servings, failures = {}, {}
    for name, path in runnables.items():
        try:
            servings[name] = measure(path, plan, threads)
        except RuntimeError as exc:
            failures[name] = str(exc)
    return servings, failures


def facts(target: str, result: CandidateResult, serving: Serving | None, threads: int) -> dict:
    """What the candidate table and report show beside size, fidelity and latency."""
    if serving is None:
        return {}
    memory = recommended_memory_mb(target, serving.peak_rss_bytes)
    out = {
        "peak_rss_bytes": serving.peak_rss_bytes,
        "peak_rss_at_limit_bytes": serving.at_limit_bytes,
        "session_create_s": round(serving.session_create_s, 4),
        "probe_batch": serving.batch,
        "limit_batch": serving.limit_batch,
        "recommended_memory_mb": memory,
    }
    if memory is not None and result.latency_ms and (target, "x86_64") in PRICES:
        costs = {
            arch: cost_per_million(target, memory, result.latency_ms, arch=arch, threads=threads, peak_rss_bytes=serving.peak_rss_bytes)
            for arch in ARCHES.get(target, ("x86_64",))
            if (target, arch) in PRICES
        }
        out["cost"] = {arch: c.to_dict() for arch, c in costs.items()}
        out["cost_per_million_usd"] = round(next(iter(costs.values())).per_million_usd, 6)
    return out


def objective_costs(per_candidate: Mapping[str, dict]) -> dict[str, float]:
    return {name: f["cost_per_million_usd"] for name, f in per_candidate.items() if "cost_per_million_usd" in f}


def cold_start(size: Footprint, where: Fit, budget: Budget, serving: Serving | None) -> dict:
    """The cold start's parts, for the chosen delivery (fetch when it fits no function)."""
    a = budget.assumptions
    fetched = where.delivery != "bundle"
    parts = {
        "base_s": a.base_s,
        "download_s": round(size.deployed / a.fetch_bytes_per_s, 3) if fetched else 0.0,
        "inflate_s": round(size.inflated / a.inflate_bytes_per_s, 3) if size.deployed != size.inflated else 0.0,
        "session_create_s": round(serving.session_create_s if serving else size.inflated / a.load_bytes_per_s, 4),
    }
    total = sum(parts.values())
    return {
        **parts,
        "total_s": round(total, 3),
        "init_limit_s": budget.cold_start_s,
        "within_init": total <= budget.cold_start_s,
        "session_create": "measured" if serving else "estimated",
        "download": f"deployed bytes at {a.fetch_bytes_per_s / limits.MB:g} MB/s ({limits.S3_GET_SOURCE})"
        if fetched
        else "in the bundle: Lambda fetches the code before the init phase, outside its limit",
        "beyond_init": "" if total <= budget.cold_start_s else beyond_init(budget.target).strip(" ()"),
    }


def serving_extra(budget: Budget, chosen: dict, serving: Serving | None, cold: dict, failure: str | None) -> dict:
    """The manifest's `extra.serving`: what the deploy sizes the function by."""
    if serving is None:
        return {"measured": False, "why": failure or "not measured", "cold_start": cold}
    return {
        "measured": True,
        **serving.to_dict(),
        "headroom": HEADROOM,
        "recommended_memory_mb": chosen.get("recommended_memory_mb"),
        "memory_rule": MEMORY_RULE,
        "target_memory_bytes": budget.memory_bytes,
        "cold_start": cold,
        **({"cost": chosen["cost"]} if "cost" in chosen else {}),
    }
