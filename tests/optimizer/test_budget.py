"""The budget: the runtime's weight first, then bundle, fetch or endpoint; never nothing."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from infra import limits
from optimizer.budget import RUNTIME, Budget, Footprint, Room, budget_for, deflated_size, fit
from optimizer.pipeline import optimize
from optimizer.search import decide, within_tolerance
from shared.artifact.loading import load_artifact
from shared.artifact.manifest import CandidateResult
from slimserve.cli import main
from tests.optimizer.conftest import FAST_TIMING, tiny_spec

MB = 10**6


def _budget(room: int = 10 * MB, tmp: int = 500 * MB, memory: int = 2000 * MB, cold: float = 10.0, **kw) -> Budget:
    return Budget("test", (Room("unzipped", "test limit", room + 50 * MB, 50 * MB),), memory, tmp, cold, **kw)


def test_aws_budget_takes_the_runtime_weight_out_of_each_package_limit():
    budget = budget_for("aws-lambda")
    rooms = {r.measure: r for r in budget.rooms}
    assert rooms["unzipped"].limit == 250 * 2**20 == limits.platform("aws-lambda").package[1].bytes
    assert rooms["unzipped"].model == 250 * 2**20 - RUNTIME["aws-lambda"].unzipped
    # `serverless deploy` uploads through S3: the 50 MiB zipped limit binds only direct uploads
    assert "zipped" not in rooms and not budget.direct_upload
    direct = {r.measure: r for r in budget_for("aws-lambda", direct_upload=True).rooms}
    assert direct["zipped"].model == 50 * 2**20 - RUNTIME["aws-lambda"].zipped
    assert direct["unzipped"] == rooms["unzipped"]
    assert (budget.memory_bytes, budget.tmp_bytes, budget.cold_start_s) == (10240 * 2**20, 10240 * 2**20, 10.0)
    gcp = {r.measure: r for r in budget_for("gcp-functions").rooms}
    assert gcp["zipped"].runtime == 0  # the platform installs the wheels: only our code and the model are uploaded
    assert budget_for("aws-lambda", max_model_bytes=1234).max_model_bytes == 1234


def test_fit_bundle_then_fetch_then_nowhere():
    assert fit(Footprint(MB, MB, MB), _budget()).delivery == "bundle"
    fetched = fit(Footprint(60 * MB, 55 * MB, 60 * MB), _budget())
    assert fetched.delivery == "fetch" and "left of the" in fetched.reason
    assert fetched.cold_start_s == pytest.approx(
        1.5 + 60 / 100 + 60 / 75
    )  # S3 at 75 MB/s: Lambda's network binds 8 ranged reads (infra/limits.py)
    slow = fit(Footprint(400 * MB, 390 * MB, 400 * MB), _budget(tmp=1000 * MB))
    assert slow.delivery is None and "cold start" in slow.reason
    assert fit(Footprint(400 * MB, 390 * MB, 400 * MB), _budget(tmp=100 * MB)).reason.endswith("/tmp > 100.0 MB")
    assert "memory" in fit(Footprint(MB, MB, 900 * MB), _budget(room=1000 * MB, memory=1000 * MB)).reason
    capped = fit(Footprint(MB, MB, MB), _budget(max_model_bytes=1000))
    assert capped.delivery is None and "--max-bytes 1,000" in capped.reason


def test_the_upload_path_decides_whether_a_35_mb_model_rides_in_the_bundle():
    size = Footprint(35 * MB, 30 * MB, 35 * MB)  # zipped, over the 17 MiB a direct upload leaves after the runtime
    assert fit(size, budget_for("aws-lambda")).delivery == "bundle"
    direct = fit(size, budget_for("aws-lambda", direct_upload=True))
    assert direct.delivery == "fetch" and "zipped > 17.8 MB left of the 52.4 MB zipped limit" in direct.reason


def test_a_compressed_model_pays_its_inflated_size_in_tmp_and_the_inflate_time():
    plain = fit(Footprint(8 * MB, 8 * MB, 8 * MB), _budget())
    packed = fit(Footprint(4 * MB, 4 * MB, 8 * MB), _budget())
    assert packed.delivery == "bundle" and packed.cold_start_s > plain.cold_start_s
    assert packed.memory == plain.memory  # memory holds the inflated model either way
    assert fit(Footprint(4 * MB, 4 * MB, 8 * MB), _budget(tmp=5 * MB)).delivery is None  # compressed + inflated in /tmp


def test_deflated_size_is_measured_small_and_sampled_large(tmp_path: Path):
    small = tmp_path / "small"
    small.write_bytes(bytes(100_000))
    assert 0 < deflated_size(small) < 1_000
    large = tmp_path / "large"
    large.write_bytes(os.urandom(3 * MB) + bytes(3 * MB))  # half incompressible, half zeros
    assert 0.4 * 6 * MB < deflated_size(large) < 0.6 * 6 * MB


def _r(name: str, size: int, drop: float, latency: float = 1.0, tolerance: float = 0.01) -> CandidateResult:
    return CandidateResult(name, size, {"accuracy": 0.9 - drop, "drop": drop}, latency, within_tolerance(drop, tolerance))


def test_decide_prefers_what_fits_by_the_objective_and_says_where():
    results = [_r("fp32", 40 * MB, 0.0, 2.0), _r("int8", 10 * MB, 0.004, 1.0), _r("int4", 6 * MB, 0.003, 3.0), _r("bad", MB, 0.2)]
    fits = {r.name: fit(Footprint(r.bytes, r.bytes, r.bytes), _budget(room=8 * MB)) for r in results}
    size = decide(results, fits, _budget(room=8 * MB), 0.01, "accuracy", "size")
    assert (size.choice.candidate, size.placement, size.delivery) == ("int4", "function", "bundle")
    latency = decide(results, fits, _budget(room=8 * MB), 0.01, "accuracy", "latency")
    assert (latency.choice.candidate, latency.delivery) == ("int8", "fetch")  # fastest; too big to bundle
    assert "fetched into /tmp at cold start" in latency.choice.reason
    accuracy = decide(results, fits, _budget(room=8 * MB), 0.01, "accuracy", "accuracy")
    assert (accuracy.choice.candidate, accuracy.delivery) == ("fp32", "fetch")


def test_decide_never_returns_nothing_and_names_the_closest():
    results = [_r("fp32", 40 * MB, 0.0), _r("int8", 10 * MB, 0.004), _r("tiny", MB, 0.3)]
    budget = _budget(max_model_bytes=100)
    fits = {r.name: fit(Footprint(r.bytes, r.bytes, r.bytes), budget) for r in results}
    decision = decide(results, fits, budget, 0.01, "accuracy")
    assert (decision.placement, decision.closest, decision.choice.candidate) == ("endpoint", "int8", "int8")
    assert "no candidate within tolerance fits a function on test" in decision.choice.reason
    assert "int8 (10,000,000 bytes, accuracy drop 0.004)" in decision.choice.reason and "--max-bytes 100" in decision.choice.reason
    nothing = decide([CandidateResult("fp32", 0, {}, 0.0, False, "failed: x")], {}, budget, 0.01, "accuracy")
    assert nothing.placement == "endpoint" and nothing.choice.candidate == "fp32"


def test_a_model_over_the_budget_goes_to_the_endpoint_with_exit_code_0(tmp_path: Path, capsys):
    spec = tiny_spec(tmp_path / "project")
    out = tmp_path / "art"
    code = main(
        [
            "optimize",
            str(spec),
            "--out",
            str(out),
            "--max-bytes",
            "1000",
            "--quiet",
            "--candidates",
            "int8-static-qdq-minmax",
            "--direct-upload",
        ]
    )
    assert code == 0
    manifest = load_artifact(out).manifest
    assert (manifest.placement, manifest.delivery) == ("endpoint", "bundle")
    assert manifest.budget["max_model_bytes"] == 1000 and manifest.budget["rooms"]
    assert manifest.budget["direct_upload"] and {r["measure"] for r in manifest.budget["rooms"]} == {"zipped", "unzipped"}
    assert "Closest: int8-static-qdq-minmax (" in manifest.chosen.reason and "--max-bytes 1,000" in manifest.chosen.reason
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("slimserve:") and "manifest sha256" not in line]
    assert len(lines) == 1 and "placement endpoint" in lines[0] and "report.md" in lines[0]
    assert (out / "report.md").is_file() and "placement `endpoint`" in (out / "report.md").read_text()


def test_a_model_too_big_for_the_bundle_is_fetched(tmp_path: Path):
    spec = tiny_spec(tmp_path / "project")
    budget = dataclasses.replace(budget_for("aws-lambda"), rooms=(Room("unzipped", "test", 1000, 0),))
    out = optimize(spec, out=tmp_path / "art", candidates=("int8-static-qdq-minmax",), quiet=True, timing=FAST_TIMING, budget=budget)
    manifest = load_artifact(out).manifest
    assert (manifest.placement, manifest.delivery) == ("function", "fetch")
    chosen = manifest.extra["optimizer"]["candidates"][manifest.chosen.candidate]
    assert chosen["delivery"] == "fetch" and manifest.budget["chosen"]["cold_start_s"] > 1.5
    assert json.loads((out / "manifest.json").read_text())["budget"]["rooms"][0]["model"] == 1000


def test_max_bytes_must_be_positive(tmp_path: Path, capsys):
    assert main(["optimize", str(tiny_spec(tmp_path / "p")), "--out", str(tmp_path / "a"), "--max-bytes", "0"]) == 2
    assert "--max-bytes 0 must be a positive" in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class Measured:  # what the serving probe reports (optimizer.budget.Measured)
    peak_rss_bytes: int
    session_create_s: float


def test_a_fetch_past_lambdas_init_limit_loads_in_the_first_request_under_the_timeout():
    aws = budget_for("aws-lambda")
    assert (aws.cold_start_s, aws.first_request_s) == (10.0, 29.0)
    # 600 MB fetched at 75 MB/s (8 s) + 1.5 s base + 1 s session: ~10.5 s, past the init, inside the 29 s timeout
    late = fit(Footprint(600 * MB, 580 * MB, 600 * MB), aws, Measured(900 * MB, 1.0))
    assert late.delivery == "fetch" and late.cold_start_s == pytest.approx(1.5 + 1.0 + 600 / 75)
    assert "runs it again in the first invocation" in late.reason and "under the 29 s timeout" in late.reason
    # 2 GB: ~29 s of download alone, past the timeout too: the endpoint's
    slow = fit(Footprint(2000 * MB, 1900 * MB, 2000 * MB), aws, Measured(2500 * MB, 1.0))
    assert slow.delivery is None and "SnapStart" in slow.reason
    # where the platform documents no such retry, past the cold start is past the budget
    assert fit(Footprint(600 * MB, 580 * MB, 600 * MB), budget_for("gcp-functions"), Measured(900 * MB, 1.0)).delivery is None
