"""Op-wise fallback: a candidate that breaks the tolerance is repaired by keeping the layers that break it."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from optimizer import candidates as registry
from optimizer.data import load_dataset
from optimizer.evaluate import Reference, TimingConfig, measure
from optimizer.export import export_fp32
from optimizer.fallback import SUFFIX, _smallest_passing, repair, worth_repairing
from optimizer.pipeline import optimize
from optimizer.spec import load_spec
from optimizer.steps import StepContext
from shared.artifact.manifest import CandidateResult
from tests.optimizer.text.conftest import tiny_project

FAST = TimingConfig(warmup=1, runs=3, max_seconds=0.2)
FRAGILE = "/model/encoder/layer.0/output/dense/MatMul"


@pytest.fixture(scope="module")
def fragile(tmp_path_factory) -> Path:
    """The tiny BERT with one layer that 4-bit blocks break: a large weight in every block of 32 inputs
    leaves the 15 steps of each block too coarse for the others (LLM.int8()'s outlier story, in one layer)."""
    from transformers import BertModel

    spec = tiny_project(tmp_path_factory.mktemp("fragile"), tolerance=0.002)
    folder = spec.parent / "bert"
    model = BertModel.from_pretrained(str(folder))
    with torch.no_grad():
        weight = model.encoder.layer[0].output.dense.weight  # [out 64, in 128]; ONNX MatMul K = 128
        weight *= 20.0  # the layer dominates the residual stream...
        weight[:, ::32] *= 30.0  # ...and each block of 32 inputs holds one large weight
    model.save_pretrained(str(folder))
    return spec


def test_the_most_sensitive_layer_is_kept_and_the_repair_holds_on_held_out_data(fragile, tmp_path):
    spec = load_spec(fragile)
    reference_path = export_fp32(spec, tmp_path / "reference.onnx")
    reference = Reference.of(reference_path, "embedding", load_dataset(spec, "evaluation"), "embedding")
    ctx = StepContext(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=tmp_path / "work")
    candidate = registry.REGISTRY["int4-weight-only-b32"]
    broken = measure(candidate.build(reference_path, ctx), reference, FAST)
    assert broken.metrics["drop"] > spec.tolerance  # the premise: plain 4-bit breaks it

    repaired = repair(candidate, reference_path, ctx)
    assert repaired.name == "int4-weight-only-b32" + SUFFIX
    kept = repaired.steps[0].keep
    assert kept[0] == FRAGILE and len(kept) <= 3
    assert "fallback kept" in repaired.description and FRAGILE in repaired.description
    path = repaired.build(reference_path, ctx)
    fixed = measure(path, reference, FAST)
    assert fixed.metrics["drop"] <= spec.tolerance  # decided on calibration data, holds on evaluation data
    bits = {
        n.name: next(a.i for a in n.attribute if a.name == "bits") for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"
    }
    assert bits[FRAGILE + "_Q8"] == 8 and sum(b == 4 for b in bits.values()) >= 12 - len(kept)


def test_the_pipeline_repairs_and_chooses_the_repaired_candidate(fragile, tmp_path):
    out = optimize(fragile, out=tmp_path / "a", quiet=True, candidates=("int4-weight-only-b32",), timing=FAST)
    manifest = json.loads((out / "manifest.json").read_text())
    rows = {c["name"]: c for c in manifest["candidates"]}
    assert not rows["int4-weight-only-b32"]["within_tolerance"]
    assert rows["int4-weight-only-b32+fallback"]["within_tolerance"]
    assert manifest["chosen"]["candidate"] == "int4-weight-only-b32+fallback"
    assert rows["int4-weight-only-b32+fallback"]["bytes"] < rows["fp32"]["bytes"] / 2


def _result(name, size, ok, latency=1.0):
    return CandidateResult(name, size, {"cosine": 1.0, "drop": 0.0 if ok else 0.1}, latency, ok)


def test_only_candidates_that_could_still_win_are_repaired():
    results = [
        _result("fp32", 100, True),
        _result("int8", 30, True),
        _result("int4", 15, False),
        _result("big", 40, False),
        CandidateResult("broken", 0, {}, 0.0, False, "failed: x"),
    ]
    assert [r.name for r in worth_repairing(results, "size")] == ["int4"]  # "big" cannot beat int8's 30 bytes
    assert [r.name for r in worth_repairing(results[:1] + results[2:4], "size")] == ["int4", "big"]
    assert worth_repairing(results, "accuracy") == []  # fp32 wins accuracy; a repair cannot beat it


@pytest.mark.parametrize("smallest", [1, 2, 3, 5, 8, 13])
def test_the_smallest_passing_count_is_found(smallest):
    tried = []

    def passes(k):
        tried.append(k)
        return k >= smallest

    assert _smallest_passing(passes, 16) == (smallest, smallest)
    assert len(tried) <= 2 * 5  # doubling then bisecting, not one by one


def test_no_count_passing_reports_the_cap():
    assert _smallest_passing(lambda k: False, 6) == (6, None)
