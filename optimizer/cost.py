"""What one candidate costs to serve: the memory to give the function, and dollars per million requests.

Memory: the serving process's measured peak RSS (optimizer/serving_probe.py) times `HEADROOM`, rounded up
to the target's next memory setting (infra/limits.py `memory_size_mb`). The headroom covers what the probe
does not run: the HTTP layer and its request buffers (a 6 MB body decoded and answered), Python's allocator
keeping freed pages, and the spread between one run and the next.

Cost per million requests: billed duration x (billed memory x price per GB-s + vCPUs x price per vCPU-s)
x 10**6 + the request price, with prices from infra/prices.py. The duration is the optimizer's measured p50
at batch 1, taken with `threads` onnxruntime threads on one core each here, scaled to the CPU the function
gets at that memory: a function with v < threads vCPUs runs the same work v/threads as fast (Lambda:
1,769 MB = 1 vCPU, so at 128 MB a request takes 1769/128 = 13.8x as long); more vCPUs than threads do not
speed up one request. It is the model's run only (not the handler's JSON): a lower bound on the bill.
One core here is assumed to match one vCPU there, and Lambda's arm64 to run as fast as this x86_64 machine;
neither is measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from infra import limits
from infra.prices import price
from optimizer.budget import HEADROOM

MiB = limits.MiB


@dataclass(frozen=True)
class Cost:
    target: str
    arch: str
    memory_mb: int  # the memory setting the cost is for
    vcpus: float  # the CPU share that memory buys
    duration_ms: float  # the measured p50, scaled to that CPU share
    billed_ms: float  # rounded up to the billing granularity, at least the minimum
    per_million_usd: float
    price_source: str
    price_recorded: str

    def to_dict(self) -> dict:
        out = asdict(self)
        out["per_million_usd"] = round(self.per_million_usd, 6)
        out["duration_ms"] = round(self.duration_ms, 4)
        return out


def recommended_memory_mb(target: str, peak_rss_bytes: int) -> int | None:
    """The target's smallest memory setting above the peak x HEADROOM; None when the target has none so big."""
    return limits.memory_size_mb(target, peak_rss_bytes * HEADROOM / MiB)


def billed_memory_mb(target: str, memory_mb: int, peak_rss_bytes: int) -> int:
    """Azure's Consumption plan bills the memory a run used, rounded up to 128 MB; the others the setting."""
    if target == "azure-functions":
        return min(memory_mb, max(128, math.ceil(peak_rss_bytes / MiB / 128) * 128))
    return memory_mb


def request_duration_ms(latency_ms: float, vcpus: float, threads: int = 1) -> float:
    return latency_ms * max(1.0, threads / vcpus)


def cost_per_million(
    target: str, memory_mb: int, latency_ms: float, *, arch: str = "x86_64", threads: int = 1, peak_rss_bytes: int = 0
) -> Cost:
    p = price(target, arch)
    vcpus = limits.vcpus_at(target, memory_mb)
    duration_ms = request_duration_ms(latency_ms, vcpus, threads)
    step_ms = p.granularity_s * 1000
    # round() first: 0.3/0.1 is 2.9999999999999996 in floats, which must not bill a fourth step
    billed_ms = max(p.minimum_s * 1000, math.ceil(round(duration_ms / step_ms, 9)) * step_ms)
    memory_gb = max(billed_memory_mb(target, memory_mb, peak_rss_bytes), p.min_memory_mb) / 1024
    per_request = billed_ms / 1000 * (memory_gb * p.per_gb_s + vcpus * p.per_vcpu_s)
    return Cost(
        target, arch, memory_mb, round(vcpus, 4), duration_ms, billed_ms, per_request * 1e6 + p.per_million_requests, p.source, p.recorded
    )
