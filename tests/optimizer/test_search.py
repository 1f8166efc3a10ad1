"""The choice: the smallest candidate within tolerance; fp32 when nothing compressed is faithful enough."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimizer import candidates as registry
from optimizer.evaluate import primary_metric, task_metrics, with_drop
from optimizer.pipeline import optimize
from optimizer.search import NUMERIC_SLACK, choose, within_tolerance
from shared.artifact.loading import load_artifact
from shared.artifact.manifest import CandidateResult
from tests.optimizer.conftest import FAST_TIMING


def _result(name: str, size: int, drop: float, tolerance: float, latency: float = 1.0) -> CandidateResult:
    return CandidateResult(name, size, {"accuracy": 0.9 - drop, "drop": drop}, latency, within_tolerance(drop, tolerance))


def test_chooses_the_smallest_within_tolerance():
    results = [_result("fp32", 4000, 0.0, 0.01), _result("int8", 1000, 0.004, 0.01), _result("int4", 600, 0.03, 0.01)]
    choice = choose(results, 0.01, "accuracy")
    assert choice.candidate == "int8"
    assert choice.reason == "smallest within tolerance 0.01: int8, 4.0x smaller than fp32, accuracy drop 0.004"


def test_falls_back_to_fp32_when_nothing_compressed_is_within_tolerance():
    results = [_result("fp32", 4000, 0.0, 0.0), _result("int8", 1000, 0.002, 0.0), _result("int4", 600, 0.03, 0.0)]
    choice = choose(results, 0.0, "accuracy")
    assert choice.candidate == "fp32"
    assert "int8 accuracy drop 0.002" in choice.reason and "int4 accuracy drop 0.030" in choice.reason


def test_never_returns_nothing_and_skips_failed_candidates():
    failed = CandidateResult("int8", 0, {}, 0.0, False, "failed: no kernel")
    assert choose([_result("fp32", 10, 0.0, 0.1), failed], 0.1, "cosine").candidate == "fp32"
    assert choose([failed], 0.1, "cosine").candidate == "fp32"


def test_ties_go_to_the_cheaper_registry_entry_and_objectives_differ():
    results = [_result("fp32", 4000, 0.0, 0.01, 2.0), _result("a", 1000, 0.001, 0.01, 3.0), _result("b", 1000, 0.001, 0.01, 1.0)]
    assert choose(results, 0.01, "accuracy").candidate == "a"
    assert choose(results, 0.01, "accuracy", objective="latency").candidate == "b"
    assert choose(results, 0.01, "accuracy", objective="accuracy").candidate == "fp32"


def test_round_off_is_not_a_drop_but_a_real_drop_is():
    assert within_tolerance(NUMERIC_SLACK / 2, 0.0)
    assert not within_tolerance(1e-5, 0.0)


def test_task_metrics_and_drop_direction():
    reference = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    flipped = reference.copy()
    flipped[0] = [0.9, 0.1]
    labels = np.array([1, 0, 0, 0])
    ref = task_metrics("classification", reference, reference, labels)
    got = task_metrics("classification", flipped, reference, labels)
    assert ref == {"agreement": 1.0, "accuracy": 0.75}
    assert got == {"agreement": 0.75, "accuracy": 0.5}
    assert with_drop("classification", got, ref, True)["drop"] == pytest.approx(0.25)

    orthogonal = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert task_metrics("embedding", orthogonal, orthogonal, None)["cosine"] == pytest.approx(1.0)
    assert task_metrics("embedding", orthogonal[::-1], orthogonal, None)["cosine"] == pytest.approx(0.0)

    values = np.array([[2.0], [4.0]])
    err = task_metrics("regression", values * 1.1, values, None)
    assert err["rel_error"] == pytest.approx(0.1)
    assert with_drop("regression", err, {"rel_error": 0.0}, False)["drop"] == pytest.approx(0.1)  # worse = positive
    assert primary_metric("regression", False) == ("rel_error", False)
    assert primary_metric("classification", False) == ("agreement", True)


def _candidates(folder: Path) -> dict[str, CandidateResult]:
    return {c.name: c for c in load_artifact(folder).manifest.candidates}


def test_optimize_with_tolerance_zero_keeps_fp32(tiny: Path, tmp_path: Path):
    # embedding cosine of an int8 model is below 1 however good it is: tolerance 0 cannot be met
    # (fp16 moves TinyNet's cosine by less than NUMERIC_SLACK, so it is left out of this question)
    plan = tuple(name for name in registry.REGISTRY if name != "fp16")
    folder = optimize(tiny, out=tmp_path / "art", tolerance=0.0, quiet=True, timing=FAST_TIMING, candidates=plan)
    manifest = load_artifact(folder).manifest
    by_name = _candidates(folder)
    assert manifest.chosen.candidate == "fp32"
    assert by_name["fp32"].within_tolerance and by_name["fp32"].metrics["drop"] <= NUMERIC_SLACK
    # (candidates skipped as not applicable to TinyNet, e.g. structured pruning, carry no metrics)
    assert all(not c.within_tolerance and c.metrics["drop"] > 0 for n, c in by_name.items() if n != "fp32" and c.metrics)
    assert manifest.files["model.onnx"].bytes == by_name["fp32"].bytes


def test_optimize_with_room_picks_the_smallest_faithful(tiny: Path, tmp_path: Path):
    folder = optimize(tiny, out=tmp_path / "art", tolerance=0.01, quiet=True, timing=FAST_TIMING)
    manifest = load_artifact(folder).manifest
    within = [c for c in manifest.candidates if c.within_tolerance]
    smallest = min(within, key=lambda c: c.bytes)
    assert len(within) >= 2, "the tiny model's int8 variants should be within 0.01 cosine"
    assert manifest.chosen.candidate == smallest.name != "fp32"
    assert manifest.files["model.onnx"].bytes == smallest.bytes
    assert all(c.metrics["cosine"] >= 1 - 0.01 for c in within)
