"""Memory and money in the budget: the serving probe measures a fresh runtime process, the fit refuses what
the target's memory cannot hold, the recommended memory and the cost follow from the measurement and the
price table, `--objective cost` ranks by the cost, and the artifact carries it all."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from infra import limits
from infra.prices import PRICES, price
from optimizer.budget import HEADROOM, Budget, Footprint, Room, budget_for, fit
from optimizer.cost import cost_per_million, recommended_memory_mb
from optimizer.pipeline import optimize
from optimizer.search import decide
from optimizer.serving_probe import Plan, Serving, measure, plan
from shared.artifact.loading import load_artifact
from shared.artifact.manifest import CandidateResult
from slimserve.cli import main
from tests.optimizer.conftest import FAST_TIMING, tiny_spec

MB, MiB = limits.MB, limits.MiB


def _dense_model(path, width: int) -> None:
    """input [batch, 1, 8, 8] -> MatMul by a 64 x `width` float32 weight -> [batch, 10]: the weights set its size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.random((64, width), dtype=np.float32), "w1"),
        numpy_helper.from_array(rng.random((width, 10), dtype=np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_probe_measures_a_fresh_process_whose_peak_grows_with_the_model(tmp_path):
    small, big = tmp_path / "small.onnx", tmp_path / "big.onnx"
    _dense_model(small, 100)
    _dense_model(big, 200_000)  # 64 x 200,000 + 200,000 x 10 floats: 59 MB of weights
    probe = Plan(batch=16, limit_batch=16, length=1, how="16 rows")
    ballast = np.ones(400 * MiB, dtype=np.uint8)  # held by this process: a probe counting it would read > 400 MiB
    measured = {name: measure(path, probe) for name, path in (("small", small), ("big", big))}
    assert ballast.sum() == 400 * MiB
    weights = big.stat().st_size - small.stat().st_size
    assert measured["small"].peak_rss_bytes < 300 * MiB, "the child's peak includes the parent's memory"
    # onnxruntime holds the weights at least once; the proto and the session's copy may coexist while loading
    assert measured["big"].peak_rss_bytes - measured["small"].peak_rss_bytes > 0.8 * weights
    assert all(m.session_create_s > 0 and m.half_peak_rss_bytes <= m.peak_rss_bytes for m in measured.values())
    assert measured["big"].session_create_s > measured["small"].session_create_s


def test_probe_batch_is_the_largest_the_request_limits_allow_with_text_capped_by_tokens():
    digits = plan([(-1, 1, 8, 8)], None)
    assert (digits.batch, digits.limit_batch) == (1024, 1024)  # 1,024 rows x 64 elements: the batch limit binds
    image = plan([(-1, 3, 224, 224)], None)
    assert image.batch == image.limit_batch == 4_194_304 // (3 * 224 * 224)  # the elements limit binds
    text = plan([(-1,)], 256)
    assert (text.batch, text.limit_batch, text.length) == (32, 1024, 256) and "8,192 tokens" in text.how
    grown = Serving(200 * MiB, 150 * MiB, 0.1, 0.1, 0.1, batch=32, limit_batch=1024, how="")
    assert grown.at_limit_bytes == 200 * MiB + round(50 * MiB / 16 * (1024 - 32))  # linear in rows from the two runs


def _budget(memory: int) -> Budget:
    return Budget("test", (Room("unzipped", "test limit", 60 * MB, 50 * MB),), memory, 500 * MB, 10.0)


def test_fit_refuses_a_measured_peak_over_the_target_memory_with_its_headroom():
    size = Footprint(MB, MB, MB)
    serving = Serving(90 * MB, 90 * MB, 0.25, 0.1, 0.01, 1024, 1024, "")
    refused = fit(size, _budget(100 * MB), serving)  # 90 MB x 1.25 = 112.5 MB > 100 MB
    assert refused.delivery is None and "measured peak RSS 90.0 MB x 1.25 headroom" in refused.reason
    held = fit(size, _budget(int(90 * MB * HEADROOM) + 1), serving)
    assert held.delivery == "bundle" and held.measured and held.memory == 90 * MB
    assert held.cold_start_s == pytest.approx(1.5 + 0.25)  # base + the measured session creation


def test_a_cold_start_past_lambdas_init_says_what_happens():
    slow = Serving(100 * MB, 100 * MB, 9.0, 0.1, 0.1, 1, 1, "")
    late = fit(Footprint(MB, MB, MB), budget_for("aws-lambda"), slow)  # 1.5 + 9.0 s > 10 s, inside the 29 s timeout
    assert late.delivery == "bundle" and "~10.5 s cold start > the 10 s init" in late.reason
    assert "first invocation" in late.reason and "under the 29 s timeout" in late.reason
    slower = Serving(100 * MB, 100 * MB, 30.0, 0.1, 0.1, 1, 1, "")  # 31.5 s: past the timeout too
    refused = fit(Footprint(MB, MB, MB), budget_for("aws-lambda"), slower)
    assert refused.delivery is None and "cold start ~31.5 s > 10 s" in refused.reason
    assert "first invocation" in refused.reason and "SnapStart" in refused.reason


def test_recommended_memory_is_the_next_setting_above_the_peak_with_headroom():
    assert recommended_memory_mb("aws-lambda", 70 * MiB) == 128  # 87.5 MB -> Lambda's least
    assert recommended_memory_mb("aws-lambda", 300 * MiB) == 384  # 375 MB -> the next multiple of 64
    assert recommended_memory_mb("aws-lambda", 9000 * MiB) is None  # 11,250 MB > 10,240
    assert recommended_memory_mb("gcp-functions", 600 * MiB) == 1024  # 750 MB -> the 1 GiB tier
    assert recommended_memory_mb("azure-functions", 1300 * MiB) is None  # 1,625 MB > the one 1.5 GB size


def test_cost_per_million_requests_matches_the_price_table_by_hand():
    # Lambda x86 at 1,024 MB: 1024/1769 vCPU; 10 ms on a core takes 17.28 ms, billed 18 ms (1 ms steps)
    lam = cost_per_million("aws-lambda", 1024, 10.0)
    assert lam.billed_ms == 18 and lam.vcpus == pytest.approx(0.5789, abs=1e-4)
    assert lam.per_million_usd == pytest.approx(1e6 * 0.018 * 1.0 * 0.0000166667 + 0.20)  # $0.5000
    assert cost_per_million("aws-lambda", 1024, 10.0, arch="arm64").per_million_usd == pytest.approx(1e6 * 0.018 * 0.0000133334 + 0.20)
    # at 1,769 MB and above one request runs on one thread: no faster, only dearer
    assert cost_per_million("aws-lambda", 3008, 10.0).billed_ms == 10
    # GCF 512 MiB tier, 0.333 vCPU: 50 ms -> 150.2 ms, billed 200 ms (100 ms steps), CPU and memory apart
    gcf = cost_per_million("gcp-functions", 512, 50.0)
    assert gcf.billed_ms == 200
    assert gcf.per_million_usd == pytest.approx(1e6 * 0.2 * (0.5 * 0.0000025 + 0.333 * 0.000024) + 0.40)  # $2.2484
    # Azure Consumption bills used memory rounded up to 128 MB (200 MiB -> 256 MB) and at least 100 ms
    azure = cost_per_million("azure-functions", 1536, 5.0, peak_rss_bytes=200 * MiB)
    assert azure.billed_ms == 100 and azure.per_million_usd == pytest.approx(1e6 * 0.1 * 0.25 * 0.000016 + 0.20)  # $0.60


def test_every_price_names_its_source_and_the_day_it_was_recorded():
    for p in PRICES.values():
        assert p.source.startswith("https://") and p.recorded == "2026-12-02" and "not fetched live" in p.note
    with pytest.raises(KeyError, match="no price for aws-lambda s390x"):
        price("aws-lambda", "s390x")


def _result(name: str, size: int, latency_ms: float, drop: float = 0.0) -> CandidateResult:
    return CandidateResult(name, size, {"accuracy": 0.9 - drop, "drop": drop}, latency_ms, True)


def test_objective_cost_picks_the_cheapest_where_size_picks_the_smallest():
    # int8 is 4x smaller but 10x slower on this CPU (dynamic quantization often is): at 1,024 MB it bills more
    results = [_result("fp32", 4 * MB, 2.0), _result("int8-dynamic", MB, 20.0)]
    costs = {r.name: cost_per_million("aws-lambda", 1024, r.latency_ms).per_million_usd for r in results}
    budget = _budget(2000 * MB)
    fits = {r.name: fit(Footprint(r.bytes, r.bytes, r.bytes), budget) for r in results}
    assert decide(results, fits, budget, 0.01, "accuracy", "size").choice.candidate == "int8-dynamic"
    cheapest = decide(results, fits, budget, 0.01, "accuracy", "cost", costs)
    assert cheapest.choice.candidate == "fp32" and f"${costs['fp32']:.4f} per million requests" in cheapest.choice.reason
    # the same bill (both under one billed millisecond): the smaller model wins the tie
    tied = [_result("fp32", 4 * MB, 0.01), _result("int8-dynamic", MB, 0.02)]
    tied_costs = {r.name: cost_per_million("aws-lambda", 1769, r.latency_ms).per_million_usd for r in tied}
    assert len(set(tied_costs.values())) == 1
    assert decide(tied, fits, budget, 0.01, "accuracy", "cost", tied_costs).choice.candidate == "int8-dynamic"


@pytest.fixture(scope="module")
def cost_artifact(tmp_path_factory):
    spec = tiny_spec(tmp_path_factory.mktemp("project"))
    out = tmp_path_factory.mktemp("art") / "tiny"
    code = main(["optimize", str(spec), "--out", str(out), "--quiet", "--objective", "cost", "--candidates", "fp16,int8-dynamic"])
    assert code == 0
    return out


def test_the_manifest_carries_the_measured_memory_and_the_cost(cost_artifact, capsys):
    manifest = load_artifact(cost_artifact).manifest
    serving = manifest.extra["serving"]
    assert serving["measured"] and serving["batch"] == 1024 and serving["session_create_s"] > 0
    assert 20 * MiB < serving["peak_rss_bytes"] < 2000 * MiB
    expected_mb = max(128, math.ceil(serving["peak_rss_bytes"] * HEADROOM / MiB / 64) * 64)
    assert serving["recommended_memory_mb"] == expected_mb
    assert serving["cold_start"]["session_create"] == "measured" and serving["cold_start"]["within_init"]
    facts = manifest.extra["optimizer"]["candidates"]
    chosen = facts[manifest.chosen.candidate]
    assert serving["cost"]["x86_64"]["per_million_usd"] == chosen["cost_per_million_usd"]
    assert {"x86_64", "arm64"} == set(serving["cost"]) and chosen["peak_rss_bytes"] == serving["peak_rss_bytes"]
    report = (cost_artifact / "report.md").read_text()
    assert f"recommended memory **{expected_mb} MB**" in report and "per million requests" in report


def test_objective_cost_chose_the_cheapest_faithful_candidate(cost_artifact):
    manifest = load_artifact(cost_artifact).manifest
    assert manifest.extra["optimizer"]["objective"] == "cost"
    facts = manifest.extra["optimizer"]["candidates"]
    ok = [c for c in manifest.candidates if c.within_tolerance and facts.get(c.name, {}).get("delivery")]
    cheapest = min(ok, key=lambda c: (round(facts[c.name]["cost_per_million_usd"], 6), c.bytes))
    assert manifest.chosen.candidate == cheapest.name and "cheapest per million requests" in manifest.chosen.reason


def test_a_target_memory_below_the_measured_peak_places_the_model_on_the_endpoint(tmp_path):
    spec = tiny_spec(tmp_path / "project")
    tiny_memory = dataclasses.replace(budget_for("aws-lambda"), memory_bytes=16 * MiB)  # less than any Python with onnxruntime
    out = optimize(spec, out=tmp_path / "art", quiet=True, candidates=("int8-dynamic",), budget=tiny_memory, timing=FAST_TIMING)
    manifest = load_artifact(out).manifest
    assert manifest.placement == "endpoint" and "measured peak RSS" in manifest.chosen.reason
    assert "serving" not in manifest.extra  # not the function's to size
    assert all(not f["delivery"] and f["memory_measured"] for f in manifest.extra["optimizer"]["candidates"].values())


def test_the_spec_names_an_objective_and_a_wrong_one_is_one_line(tmp_path):
    from optimizer.errors import SpecError
    from optimizer.spec import load_spec

    assert load_spec(tiny_spec(tmp_path / "a", objective="cost")).objective == "cost"
    assert load_spec(tiny_spec(tmp_path / "b")).objective == "size"
    with pytest.raises(SpecError, match=r"objective .*cheap.* one of size, latency, accuracy, cost") as caught:
        load_spec(tiny_spec(tmp_path / "c", objective="cheap"))
    assert "\n" not in caught.value.message
