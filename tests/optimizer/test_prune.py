"""Structured pruning: physically smaller layers, the right columns cut across Flatten, a fine-tune, refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from optimizer.chain import load_chain, parameters
from optimizer.data import load_dataset
from optimizer.errors import NotApplicable
from optimizer.evaluate import Reference, run_model, task_metrics
from optimizer.params import count_parameters
from optimizer.progress import QUIET
from optimizer.prune import prune_chain
from optimizer.spec import load_spec
from optimizer.torch_steps import StructuredPrune, _cached
from shared.artifact.loading import load_artifact
from tests.optimizer.chains import chain_model, chain_project, write_chain_project  # noqa: F401 (fixture)
from tests.optimizer.conftest import tiny_spec


@pytest.fixture
def project(chain_project):
    return chain_project


def _ctx(spec, workdir: Path):
    return SimpleNamespace(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=workdir, progress=QUIET)


def test_removing_dead_channels_changes_nothing_even_across_flatten():
    """Zero a quarter of each hidden layer's outputs: L1 ranks exactly those last, so pruning 25% must leave the
    function intact; a wrong column mapping at Flatten -> Linear would not."""
    chain = chain_model().eval()
    with torch.no_grad():
        for layer, dead in ((chain[0], [1, 5]), (chain[3], [0, 7, 9, 14]), (chain[7], list(range(0, 48, 4)))):
            layer.weight[dead] = 0
            layer.bias[dead] = 0
        chain[1].bias[[1, 5]] = 0  # BatchNorm: a dead channel stays 0 (running mean 0, var 1)
    pruned = prune_chain(chain, 0.25)
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(pruned(x), chain(x), atol=1e-5)
    assert [pruned[0].out_channels, pruned[1].num_features, pruned[3].in_channels, pruned[3].out_channels] == [6, 6, 6, 12]
    assert (pruned[7].in_features, pruned[7].out_features, pruned[10].in_features) == (12 * 16, 36, 36)
    assert pruned[10].out_features == 4  # the model's outputs are never pruned


def test_pruned_candidate_is_smaller_and_fine_tuned(project, tmp_path: Path):
    spec, reference = project
    ctx = _ctx(spec, tmp_path)
    dst = tmp_path / "pruned.onnx"
    StructuredPrune(0.5).apply(reference, dst, ctx)
    before, after = count_parameters(reference), count_parameters(dst)
    assert after <= 0.45 * before  # half the channels of consecutive layers: about a quarter of their weights
    shapes = [list(i.dims) for i in onnx.load(str(dst)).graph.initializer if len(i.dims) > 1]
    assert sorted(shapes) == sorted([[4, 1, 3, 3], [8, 4, 3, 3], [24, 8 * 16], [4, 24]])  # BatchNorm folded by the export
    evaluation = load_dataset(spec, "evaluation")
    ref = Reference.of(reference, spec.task, evaluation, "logits")
    got = task_metrics(spec.task, run_model(dst, evaluation, "logits"), ref.outputs, evaluation.labels)
    assert got["accuracy"] >= ref.metrics["accuracy"] - 0.05, (got, ref.metrics)


def test_fine_tune_works_without_labels(project, tmp_path: Path):
    spec, reference = project
    unlabeled = write_chain_project(tmp_path / "p", train_labels=False)
    spec = load_spec(unlabeled)
    dst = tmp_path / "pruned.onnx"
    StructuredPrune(0.3).apply(reference, dst, _ctx(spec, tmp_path / "w"))  # KD toward the teacher alone
    evaluation = load_dataset(spec, "evaluation")
    ref = Reference.of(reference, spec.task, evaluation, "logits")
    assert task_metrics(spec.task, run_model(dst, evaluation, "logits"), ref.outputs, None)["agreement"] >= 0.85


def test_trained_steps_are_cached_per_config(project, tmp_path: Path):
    spec, reference = project
    ctx, calls = _ctx(spec, tmp_path), []

    def build(dst: Path):
        calls.append(dst)
        dst.write_bytes(b"model")

    for name in ("a.onnx", "b.onnx"):
        _cached(StructuredPrune(0.3), reference, tmp_path / name, ctx, lambda n=name: build(tmp_path / n))
    _cached(StructuredPrune(0.5), reference, tmp_path / "c.onnx", ctx, lambda: build(tmp_path / "c.onnx"))
    assert len(calls) == 2 and (tmp_path / "b.onnx").read_bytes() == b"model"


def test_refuses_what_is_not_a_sequential_chain(project, tmp_path: Path):
    spec, _ = project
    sample = np.zeros((2, 1, 8, 8), np.float32)
    functional = load_spec(tiny_spec(tmp_path / "tiny"))  # TinyNet calls torch.relu/flatten in forward
    with pytest.raises(NotApplicable, match="not its layers run in order"):
        load_chain(functional, sample)
    onnx_source = dataclasses.replace(spec, source=dataclasses.replace(spec.source, path=Path("m.onnx")))
    with pytest.raises(NotApplicable, match="needs a TorchScript"):
        load_chain(onnx_source, sample)
    with pytest.raises(NotApplicable, match="fewer than two"):
        prune_chain(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), 0.3)
    with pytest.raises(NotApplicable, match="without a Flatten"):
        prune_chain(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(6, 2)), 0.5)


def test_grouped_convolutions_are_refused(tmp_path: Path):
    import warnings

    grouped = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Flatten(), nn.Linear(256, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(grouped).save(str(tmp_path / "g.pt"))
    spec = load_spec(write_chain_project(tmp_path / "p"))
    spec = dataclasses.replace(spec, source=dataclasses.replace(spec.source, path=tmp_path / "g.pt"))
    with pytest.raises(NotApplicable, match="grouped Conv2d"):
        load_chain(spec, np.zeros((2, 1, 8, 8), np.float32))


def test_chain_copy_counts_the_same_parameters(project):
    spec, reference = project
    chain = load_chain(spec, load_dataset(spec, "calibration").inputs["input"])
    assert parameters(chain) - 2 * 8 == count_parameters(reference)  # the export folds BatchNorm's 2x8 into the conv


def test_digits_pruned_30_has_30_percent_fewer_parameters_within_a_point(digits_artifact: Path):
    manifest = load_artifact(digits_artifact).manifest
    facts = manifest.extra["optimizer"]["candidates"]
    by_name = {c.name: c for c in manifest.candidates}
    for name in ("pruned-30", "pruned-30+int8-static-qdq"):
        assert facts[name]["parameters"] <= 0.7 * facts["fp32"]["parameters"]
    assert by_name["pruned-30"].metrics["drop"] <= 0.01
    assert "QuantizeLinear" in by_name["pruned-30+int8-static-qdq"].note  # quantization composes on top
