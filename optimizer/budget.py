"""What a model may weigh on a target, and how a candidate fits: in the bundle, fetched at cold start, or not.

The platform's ceilings come from the one table (infra/limits.py), those that bind the way the package is
uploaded: by default through object storage (`serverless deploy`: Lambda's 250 MiB unzipped), with
`direct_upload` also the direct-upload ones (Lambda's 50 MiB zipped). From each ceiling we take the
runtime's own weight first (onnxruntime + numpy + tokenizers and our code: what every bundle carries
whatever the model), and the rest is the model's room. A candidate that does not fit the room can still
run in the function when it fits memory and /tmp and its fetch + inflate + load stays inside the cold-start
budget (`delivery: fetch`, the artifact pulled from object storage into /tmp). Otherwise it does not fit
a function at all, and the search places the model on the endpoint.

Memory and session creation are measured when the optimizer could run the serving probe
(optimizer/serving_probe.py: peak RSS of a fresh runtime process at the largest batch, x `HEADROOM` against
the target's memory); else, and for the rest of the cold start, they are estimates from the assumptions in
`ColdStart` (stated in the manifest): cold start = `base_s` + (fetch only) the deployed bytes at
`fetch_bytes_per_s` (S3's per-connection throughput, infra/limits.py) + inflating + session creation, against
the platform's init limit (Lambda: 10 s). They decide between bundle, fetch and endpoint; not a promise.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from infra import limits
from infra.limits import platform

MB, MiB = limits.MB, limits.MiB

# measured peak RSS x this must fit the target's memory; optimizer/cost.py explains the margin
HEADROOM = 1.25

_SAMPLE, _SAMPLES = 256 * 1024, 16


@dataclass(frozen=True)
class RuntimeWeight:
    """What the runtime adds to every bundle of a target, before any model byte."""

    unzipped: int
    zipped: int  # 0 where the platform installs the runtime itself (not part of the upload)
    source: str


# Where the figures come from: `slimserve bundle` reports them by part in bundle.json (`sizes.parts`).
_MEASURED = (
    "measured with `slimserve bundle` (bundle.json `sizes.parts`) for cp312 manylinux_2_28 x86_64 "
    "(onnxruntime 1.32, numpy 2.4, tokenizers 0.23)"
)
RUNTIME: dict[str, RuntimeWeight] = {
    # slimmed by the bundle builder: what the Lambda zip carries besides the model
    # (a text model's: with tokenizers; tests/bundle/test_runtime_weight.py holds these to the measured parts)
    "aws-lambda": RuntimeWeight(98 * MiB, 33 * MiB, f"{_MEASURED}: slimmed, 96.9 MiB unzipped / 32.1 MiB zipped for a text model"),
    # GCF and Azure install requirements.txt themselves, unslimmed; only our code is uploaded
    "gcp-functions": RuntimeWeight(197 * MiB, 0, f"{_MEASURED}: `pip install --target`, 197 MB, installed by the platform"),
    "azure-functions": RuntimeWeight(197 * MiB, 0, f"{_MEASURED}: `pip install --target`, 197 MB, installed by the platform"),
}


@dataclass(frozen=True)
class ColdStart:
    """The assumptions behind the cold-start and memory estimates (one vCPU-class function)."""

    base_s: float = 1.5  # interpreter, numpy and onnxruntime imports, handler init, with no model
    load_bytes_per_s: float = 100 * MB  # onnxruntime session creation per model byte (133 MB/s measured on a loaded 2-core box)
    fetch_bytes_per_s: float = (
        limits.S3_GET_BYTES_PER_S
    )  # object storage -> /tmp, 8 ranged reads bound by the function's network (source there)
    inflate_bytes_per_s: float = 100 * MB  # gzip; xz is several times slower
    memory_base: int = 200 * MiB  # the process with the runtime imported
    memory_per_model_byte: float = 2.0  # the model proto and the session's initializers coexist while loading


@dataclass(frozen=True)
class Room:
    """One package ceiling and the model's share of it."""

    measure: str  # "zipped" (the archive) or "unzipped" (the files)
    what: str
    limit: int
    runtime: int

    @property
    def model(self) -> int:
        return max(self.limit - self.runtime, 0)


@dataclass(frozen=True)
class Budget:
    target: str
    rooms: tuple[Room, ...]
    memory_bytes: int
    tmp_bytes: int
    cold_start_s: float
    first_request_s: float = 0.0  # past cold_start_s, the load may still run in the first request up to this (0: it may not)
    max_model_bytes: int | None = None  # --max-bytes: the most a model file may weigh, whatever its delivery
    runtime_source: str = ""
    direct_upload: bool = False  # --direct-upload: the rooms include the limits of a package sent straight to the platform
    assumptions: ColdStart = field(default_factory=ColdStart)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["rooms"] = [{**asdict(r), "model": r.model} for r in self.rooms]
        return out


# Where the platform documents no init limit, this is the cold start we hold ourselves to.
DEFAULT_COLD_START_S = 10.0


def budget_for(
    target: str, max_model_bytes: int | None = None, runtime: RuntimeWeight | None = None, *, direct_upload: bool = False
) -> Budget:
    limits = platform(target)
    weight = runtime or RUNTIME[target]
    rooms = tuple(
        Room(p.measure, p.what, p.bytes, weight.zipped if p.measure == "zipped" else weight.unzipped)
        for p in limits.package_limits(direct_upload)
    )
    return Budget(
        target=target,
        rooms=rooms,
        memory_bytes=limits.memory_bytes,
        tmp_bytes=limits.tmp_bytes,
        cold_start_s=float(limits.init_s or DEFAULT_COLD_START_S),
        first_request_s=float(limits.first_request_s or 0),
        max_model_bytes=max_model_bytes,
        runtime_source=weight.source,
        direct_upload=direct_upload,
    )


@dataclass(frozen=True)
class Footprint:
    """What one candidate weighs: as deployed, inside the bundle's zip, and once running."""

    deployed: int  # the model file as shipped (compressed when the candidate ships compressed)
    zipped: int  # that file deflated as the bundle's zip stores it (estimated from samples when large)
    inflated: int  # the ONNX model onnxruntime loads: what /tmp and memory hold


def footprint(deployed: Path, inflated: Path) -> Footprint:
    return Footprint(deployed.stat().st_size, deflated_size(deployed), inflated.stat().st_size)


def deflated_size(path: Path) -> int:
    """Deflate level 9 (the bundle's); past 4 MB, from evenly spread samples, since deflating a few hundred
    MB at level 9 takes minutes and the ratio of float weights barely varies along the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size <= _SAMPLE * _SAMPLES:
            return len(zlib.compress(fh.read(), 9))
        packed = 0
        for index in range(_SAMPLES):
            fh.seek(index * (size - _SAMPLE) // (_SAMPLES - 1))
            packed += len(zlib.compress(fh.read(_SAMPLE), 9))
    return round(size * packed / (_SAMPLE * _SAMPLES))


class Measured(Protocol):
    """What the serving probe measured (optimizer/serving_probe.py `Serving`)."""

    peak_rss_bytes: int
    session_create_s: float


@dataclass(frozen=True)
class Fit:
    delivery: str | None  # "bundle", "fetch", or None: no function can hold it
    reason: str  # why it is not in the bundle / why it fits nowhere ("" when it rides in the bundle)
    memory: int  # peak memory: measured peak RSS, else estimated
    cold_start_s: float  # estimated for its delivery (for fetch when it fits nowhere), with the measured session creation
    measured: bool = False  # memory and session creation come from the serving probe


def fit(size: Footprint, budget: Budget, serving: Measured | None = None) -> Fit:
    a = budget.assumptions
    if serving is not None:
        memory, create_s, needed = serving.peak_rss_bytes, serving.session_create_s, serving.peak_rss_bytes * HEADROOM
    else:
        memory = round(a.memory_base + a.memory_per_model_byte * size.inflated)
        create_s, needed = size.inflated / a.load_bytes_per_s, memory
    compressed = size.deployed != size.inflated
    load_s = a.base_s + create_s + (size.inflated / a.inflate_bytes_per_s if compressed else 0)
    fetch_s = load_s + size.deployed / a.fetch_bytes_per_s
    tmp = (size.deployed + size.inflated) if compressed else 0
    problems = []
    if budget.max_model_bytes is not None and size.deployed > budget.max_model_bytes:
        problems.append(f"model {size.deployed:,} bytes > --max-bytes {budget.max_model_bytes:,}")
    if needed > budget.memory_bytes:
        said = f"measured peak RSS {_mb(memory)} x {HEADROOM:g} headroom" if serving is not None else f"~{_mb(memory)}"
        problems.append(f"needs {said} memory > {_mb(budget.memory_bytes)}")
    done = serving is not None
    if problems:
        return Fit(None, "; ".join(problems), memory, fetch_s, done)
    over = [r for r in budget.rooms if (size.zipped if r.measure == "zipped" else size.deployed) > r.model]
    if not over and tmp <= budget.tmp_bytes and load_s <= max(budget.cold_start_s, budget.first_request_s):
        return Fit("bundle", "" if load_s <= budget.cold_start_s else _in_first_request(load_s, budget), memory, load_s, done)
    why_not_bundle = (
        "; ".join(
            f"{_mb(size.zipped if r.measure == 'zipped' else size.deployed)} {r.measure} > {_mb(r.model)} left of the "
            f"{_mb(r.limit)} {r.measure} limit after the runtime's {_mb(r.runtime)}"
            for r in over
        )
        or f"cold start ~{load_s:.1f} s > {budget.cold_start_s:g} s{beyond_init(budget.target)}"
    )
    fetch_tmp = size.deployed + (size.inflated if compressed else 0)
    if fetch_tmp > budget.tmp_bytes:
        return Fit(None, f"{why_not_bundle}; fetching needs {_mb(fetch_tmp)} of /tmp > {_mb(budget.tmp_bytes)}", memory, fetch_s, done)
    if fetch_s > budget.cold_start_s:
        slow = f"fetching it makes a ~{fetch_s:.1f} s cold start > {budget.cold_start_s:g} s"
        if fetch_s <= budget.first_request_s:
            return Fit("fetch", f"{why_not_bundle}; {_in_first_request(fetch_s, budget)}", memory, fetch_s, done)
        return Fit(None, f"{why_not_bundle}; {slow}{beyond_init(budget.target)}", memory, fetch_s, done)
    return Fit("fetch", why_not_bundle, memory, fetch_s, done)


def _in_first_request(cold_s: float, budget: Budget) -> str:
    return (
        f"a ~{cold_s:.1f} s cold start > the {budget.cold_start_s:g} s init: Lambda stops the init and runs it again in the "
        f"first invocation, so the first request after each cold start waits for it (billed), under the "
        f"{budget.first_request_s:g} s timeout"
    )


def beyond_init(target: str) -> str:
    """What a cold start past the init limit means on the target, for the reason sentence."""
    if target != "aws-lambda":
        return ""
    return (
        " (Lambda's init limit: past it the init is stopped and run again inside the first invocation, under the "
        "function's timeout and billed; or SnapStart, on for the HTTP function, loads once at publish and "
        "restores the snapshot, /tmp then at most 512 MB)"
    )


def _mb(n: float) -> str:
    return f"{n / MB:,.1f} MB"
