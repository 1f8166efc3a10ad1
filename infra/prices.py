"""What a function costs to run: the published on-demand prices of each target, with their source and date.

Read by the optimizer's cost objective (optimizer/cost.py). Figures were copied from the published pricing
pages as known on the date recorded below (no network on the machine that wrote this table): check them
against the page before quoting a bill. Free tiers and volume discounts are left out: they lower the first
or the largest bills, not the cost of one more million requests at list price.

Units: dollars; memory-seconds per GB as each provider counts it (AWS and Azure bill memory in MB/1024,
Google in GiB); duration rounded up to the provider's billing granularity, at least its minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

RECORDED = "2026-12-02"  # the day these figures were copied into this table
NOTE = "copied from the published pricing pages as known on the recorded date; not fetched live"

AWS_LAMBDA_PRICING = "https://aws.amazon.com/lambda/pricing/"
GCF_PRICING = "https://cloud.google.com/run/pricing"  # Cloud Run functions (GCF 2nd gen) bill as Cloud Run services
AZURE_FUNCTIONS_PRICING = "https://azure.microsoft.com/pricing/details/functions/"


@dataclass(frozen=True)
class Price:
    """One target's on-demand price for a request-driven invocation."""

    target: str
    arch: str
    region: str
    per_gb_s: float  # memory: dollars per GB-second
    per_vcpu_s: float  # CPU billed apart (Cloud Run); 0 where memory buys the CPU (Lambda, Azure)
    per_million_requests: float
    granularity_s: float  # billed duration is rounded up to a multiple of this
    minimum_s: float  # and is at least this
    min_memory_mb: int  # billed memory is at least this (Azure rounds observed memory up to 128 MB steps)
    source: str
    recorded: str = RECORDED
    note: str = NOTE


_AWS = {"per_vcpu_s": 0.0, "per_million_requests": 0.20, "granularity_s": 0.001, "minimum_s": 0.001, "min_memory_mb": 128}
PRICES: dict[tuple[str, str], Price] = {
    # us-east-1, first pricing tier (the first 6 billion GB-s a month); 1 ms billing since December 2020
    ("aws-lambda", "x86_64"): Price("aws-lambda", "x86_64", "us-east-1", per_gb_s=0.0000166667, source=AWS_LAMBDA_PRICING, **_AWS),
    ("aws-lambda", "arm64"): Price("aws-lambda", "arm64", "us-east-1", per_gb_s=0.0000133334, source=AWS_LAMBDA_PRICING, **_AWS),
    # Tier 1 regions (us-central1...), request-based billing: CPU and memory while a request is handled, rounded
    # up to the nearest 100 ms; memory per GiB-second
    ("gcp-functions", "x86_64"): Price(
        "gcp-functions",
        "x86_64",
        "us-central1",
        per_gb_s=0.0000025,
        per_vcpu_s=0.000024,
        per_million_requests=0.40,
        granularity_s=0.1,
        minimum_s=0.1,
        min_memory_mb=128,
        source=GCF_PRICING,
    ),
    # Consumption plan: observed memory rounded up to 128 MB, at least 100 ms and 128 MB per execution
    ("azure-functions", "x86_64"): Price(
        "azure-functions",
        "x86_64",
        "any",
        per_gb_s=0.000016,
        per_vcpu_s=0.0,
        per_million_requests=0.20,
        granularity_s=0.001,
        minimum_s=0.1,
        min_memory_mb=128,
        source=AZURE_FUNCTIONS_PRICING,
    ),
}


def price(target: str, arch: str = "x86_64") -> Price:
    try:
        return PRICES[(target, arch)]
    except KeyError:
        known = ", ".join(f"{t} {a}" for t, a in PRICES)
        raise KeyError(f"no price for {target} {arch}; known: {known}") from None
