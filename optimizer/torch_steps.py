"""Steps that go back to the torch source: structured pruning + fine-tune, and distillation.

They fit the ONNX -> ONNX step protocol: `src` is the fp32 reference (the teacher, run with onnxruntime
for its outputs), `dst` a new, smaller ONNX model with the spec's signature; quantization steps placed
after them compose as with any other step (`pruned-30+int8-static-qdq`). The trained model is cached in
the run's workdir by step config, so `pruned-30` and `pruned-30+int8-static-qdq` train once.
Raises `NotApplicable` where the source is not a Sequential-style TorchScript chain (optimizer/chain.py).
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from optimizer.data import Dataset, load_dataset
from optimizer.errors import NotApplicable
from optimizer.evaluate import run_model
from optimizer.training_spec import FineTune

# torch loads on first use (chain, finetune and prune import it): the registry names these steps in every
# run, ONNX sources included, which never need torch.


@dataclass(frozen=True)
class StructuredPrune:
    """Remove `fraction` of every hidden layer's channels/neurons (smallest L1 first), then fine-tune
    (the spec's `prune:` settings) toward the teacher, with the labels where the training data has them."""

    fraction: float = 0.3

    def apply(self, src: Path, dst: Path, ctx) -> None:
        _cached(self, src, dst, ctx, lambda: self._build(src, dst, ctx))

    def _build(self, src: Path, dst: Path, ctx) -> None:
        from optimizer.chain import export_module, load_chain
        from optimizer.prune import prune_chain

        data = training_data(ctx)
        chain = load_chain(ctx.spec, next(iter(data.inputs.values())))
        student = prune_chain(chain, self.fraction)
        _fit(student, data, teacher_outputs(src, data, ctx), ctx, ctx.spec.prune, f"fine-tuning pruned-{round(self.fraction * 100)}")
        export_module(student, ctx.spec, dst)


@dataclass(frozen=True)
class Distill:
    """Train a smaller student toward the teacher (the spec's `distill:` settings, or `--distill`): a
    user-given TorchScript student, else the teacher's own chain narrowed to `distill.width`."""

    def apply(self, src: Path, dst: Path, ctx) -> None:
        _cached(self, src, dst, ctx, lambda: self._build(src, dst, ctx))

    def _build(self, src: Path, dst: Path, ctx) -> None:
        from optimizer.chain import export_module, load_chain
        from optimizer.prune import narrow_chain

        config = ctx.spec.distill
        data = training_data(ctx)
        if config.student is not None:
            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load is marked deprecated in torch 2.13
                student = torch.jit.load(str(config.student), map_location="cpu")
        else:
            chain = load_chain(ctx.spec, next(iter(data.inputs.values())))
            student = narrow_chain(chain, config.width, seed=config.training.seed)
        _fit(student, data, teacher_outputs(src, data, ctx), ctx, config.training, "distilling the student")
        export_module(student, ctx.spec, dst)


def training_data(ctx) -> Dataset:
    """`data.train` where the spec has one, else the calibration data (inputs only, usually)."""
    return load_dataset(ctx.spec, "train") if ctx.spec.data.train is not None else ctx.calibration


def teacher_outputs(src: Path, data: Dataset, ctx):
    return run_model(src, data, ctx.spec.outputs[0].name)


def _fit(student, data: Dataset, teacher, ctx, config: FineTune, label: str) -> None:
    from optimizer.finetune import train

    if len(data.inputs) != 1:
        raise NotApplicable("training needs a model with one input")
    with ctx.progress.task(label, total=config.epochs) as advance:
        train(student, data, teacher, ctx.spec.task, config, lambda epoch, loss: advance(1))


def _cached(step, src: Path, dst: Path, ctx, build) -> None:
    digest = hashlib.sha256(repr((step, ctx.spec.prune, ctx.spec.distill, ctx.spec.data)).encode())
    digest.update(src.read_bytes())
    folder = ctx.workdir / "torch-steps" / digest.hexdigest()[:16]
    if (folder / "model.onnx").is_file():
        shutil.copyfile(folder / "model.onnx", dst)
        return
    build()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dst, folder / "model.onnx")
