"""Distillation: the loss as written in the design, derived and user-given students, and the digits figures."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optimizer.chain import load_chain, parameters
from optimizer.data import load_dataset
from optimizer.errors import SpecError
from optimizer.evaluate import Reference, run_model, task_metrics
from optimizer.finetune import distillation_loss
from optimizer.params import count_parameters
from optimizer.pipeline import _with_distill
from optimizer.progress import QUIET
from optimizer.prune import narrow_chain
from optimizer.signature import check_signature
from optimizer.torch_steps import Distill
from optimizer.training_spec import FineTune
from shared.artifact.loading import load_artifact
from tests.optimizer.chains import chain_project, write_chain_project  # noqa: F401 (fixture)


@pytest.fixture
def project(chain_project):
    return chain_project


def _ctx(spec, workdir: Path):
    return SimpleNamespace(spec=spec, calibration=load_dataset(spec, "calibration"), workdir=workdir, progress=QUIET)


def test_loss_is_alpha_ce_plus_t_squared_kl():
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    config = FineTune(alpha=0.3, temperature=3.0)
    t = 3.0
    p_teacher = F.softmax(teacher / t, dim=1)
    kl = (p_teacher * (p_teacher.log() - F.log_softmax(student / t, dim=1))).sum(1).mean()
    want = 0.3 * F.cross_entropy(student, labels) + 0.7 * t * t * kl
    assert torch.allclose(distillation_loss(student, teacher, labels, "classification", config), want, atol=1e-6)
    assert torch.allclose(distillation_loss(student, teacher, None, "classification", config), t * t * kl, atol=1e-6)
    assert torch.allclose(distillation_loss(student, teacher, labels, "embedding", config), F.mse_loss(student, teacher))
    assert float(distillation_loss(teacher, teacher, None, "classification", config)) == pytest.approx(0.0, abs=1e-6)


def test_derived_student_is_narrower_and_freshly_initialised(project):
    spec, _ = project
    teacher = load_chain(spec, load_dataset(spec, "calibration").inputs["input"])
    student = narrow_chain(teacher, 0.5)
    assert (student[0].out_channels, student[3].out_channels, student[7].out_features) == (4, 8, 24)
    assert parameters(student) < 0.3 * parameters(teacher)
    assert not torch.allclose(student[0].weight, teacher[0].weight[:4])  # not the teacher's weights


def test_derived_student_learns_the_teacher(project, tmp_path: Path):
    spec, reference = project
    dst = tmp_path / "student.onnx"
    Distill().apply(reference, dst, _ctx(spec, tmp_path))  # spec: distill {epochs: 4, width: 0.5}
    check_signature(dst, spec)
    assert count_parameters(dst) <= 0.3 * count_parameters(reference)
    evaluation = load_dataset(spec, "evaluation")
    ref = Reference.of(reference, spec.task, evaluation, "logits")
    got = task_metrics(spec.task, run_model(dst, evaluation, "logits"), ref.outputs, evaluation.labels)
    assert got["agreement"] >= 0.85 and got["accuracy"] >= ref.metrics["accuracy"] - 0.1, (got, ref.metrics)


def test_a_user_given_student_of_another_shape_is_trained(project, tmp_path: Path):
    spec, reference = project
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))  # no convolutions at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(student).save(str(tmp_path / "student.pt"))
    spec = _with_distill(spec, str(tmp_path / "student.pt"))
    assert spec.distill.student == tmp_path / "student.pt"
    dst = tmp_path / "student.onnx"
    Distill().apply(
        reference,
        dst,
        _ctx(
            dataclasses.replace(spec, distill=dataclasses.replace(spec.distill, training=FineTune(epochs=8, learning_rate=5e-3))),
            tmp_path / "w",
        ),
    )
    assert count_parameters(dst) == 64 * 16 + 16 + 16 * 4 + 4
    evaluation = load_dataset(spec, "evaluation")
    got = task_metrics(spec.task, run_model(dst, evaluation, "logits"), run_model(reference, evaluation, "logits"), None)
    assert got["agreement"] >= 0.7


def test_distill_option_takes_a_width_or_a_torchscript_file(project, tmp_path: Path):
    spec, _ = project
    assert _with_distill(spec, "0.25").distill.width == 0.25
    assert _with_distill(spec, "0.25").distill.training == spec.distill.training  # epochs etc. stay the spec's
    for bad, message in (("0", "must be > 0"), ("1.5", "must be > 0"), ("student.onnx", "neither a width")):
        with pytest.raises(SpecError, match=message):
            _with_distill(spec, bad)


def test_digits_student_has_a_quarter_of_the_parameters_within_a_point(digits_artifact: Path):
    manifest = load_artifact(digits_artifact).manifest
    facts = manifest.extra["optimizer"]["candidates"]
    distilled = next(c for c in manifest.candidates if c.name == "distilled")
    assert facts["distilled"]["parameters"] <= facts["fp32"]["parameters"] / 4
    assert distilled.metrics["drop"] <= 0.01
