"""Op-wise fallback (INC/NNCF style): a candidate that breaks the tolerance keeps its most responsible
layers at higher precision, and is tried again.

    1. sensitivity: each layer the candidate quantizes is quantized alone (everything else fp32) and
       scored by how far the outputs move from fp32's on calibration samples;
    2. repair: the k most sensitive layers are kept at higher precision (a 4-bit step keeps them 8-bit,
       an int8 step keeps them fp32), k doubling, then bisected, until the calibration drop is within
       `margin` x tolerance. Under the `size` objective "most sensitive" is per weight: MiniLM's word
       embeddings move the output as much as one attention value projection but weigh 80 times more;
    3. the repaired plan (`<name>+fallback`) goes back to the pipeline, which measures it on the
       evaluation data like any candidate.

A model past SLIMSERVE_EXTERNAL_DATA_BYTES is not repaired: step 1 writes one model per quantizable layer,
each as large as the model (a 1B-parameter BERT: ~120 layers x 4 GB); its failing candidates stay failed.

Everything here is decided on calibration data, never on evaluation data: the evaluation figure of a
repaired candidate stays a held-out figure. A layer here is an ONNX node; a step takes part when it
offers `quantizable(model) -> names` and `keeping(names, fp32=False) -> step` (the steps of
`optimizer/precision.py`); onnxruntime's int8 quantizers take part through `nodes_to_exclude`.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from optimizer import candidates as registry
from optimizer import onnx_io
from optimizer.evaluate import run_model, task_metrics, with_drop
from optimizer.steps import StepContext
from shared.artifact.manifest import CandidateResult

SUFFIX = "+fallback"


@dataclass(frozen=True)
class FallbackConfig:
    samples: int = 64  # calibration samples the sensitivity and the repair are measured on
    margin: float = 0.8  # repaired when the calibration drop is within margin x tolerance
    max_fraction: float = 0.5  # beyond half of the layers kept, the candidate has lost its point
    max_repairs: int = 2  # failing candidates repaired per run, most promising first


@dataclass(frozen=True)
class _Excluding:
    """onnxruntime's int8 quantizers: a kept layer is a node in `nodes_to_exclude`, left fp32."""

    step: object
    op_types: tuple[str, ...]

    def quantizable(self, model: onnx.ModelProto) -> tuple[str, ...]:
        inits = {i.name for i in model.graph.initializer}

        def weighted(node) -> bool:  # the weight is input 1 (MatMul, Gemm, Conv), the table input 0 (Gather)
            index = 0 if node.op_type == "Gather" else 1
            return len(node.input) > index and node.input[index] in inits

        return tuple(n.name for n in model.graph.node if n.name and n.op_type in self.op_types and weighted(n))

    def keeping(self, nodes: tuple[str, ...], fp32: bool = True):
        kept = tuple(dict.fromkeys((*self.step.nodes_to_exclude, *nodes)))
        return dataclasses.replace(self.step, nodes_to_exclude=kept)


def layered(step):
    """The step as the fallback sees it, or None when it has no layers to keep."""
    if hasattr(step, "quantizable") and hasattr(step, "keeping"):
        return step
    if isinstance(step, registry.DynamicInt8):
        return _Excluding(step, step.op_types or ("MatMul", "Gemm", "Conv", "Gather"))
    if isinstance(step, registry.StaticQDQ):
        return _Excluding(step, ("MatMul", "Gemm", "Conv"))
    return None


def worth_repairing(results: Sequence[CandidateResult], objective: str) -> list[CandidateResult]:
    """Failing candidates that, grown by a repair, could still beat the best passing one; best bet first.

    A repair only adds bytes and time, so under `size` a failing candidate already larger than the
    smallest passing one cannot win, nor a slower one under `latency` or `cost`; under `accuracy` fp32 always wins.
    """
    measured = [r for r in results if "drop" in r.metrics and not r.name.endswith(SUFFIX)]
    passing = [r for r in measured if r.within_tolerance]
    failing = [r for r in measured if not r.within_tolerance]
    if objective == "size":
        bar = min((r.bytes for r in passing), default=float("inf"))
        return sorted((r for r in failing if r.bytes < bar), key=lambda r: r.bytes)
    if objective in ("latency", "cost"):  # cost grows with the billed duration, so with latency
        bar = min((r.latency_ms for r in passing), default=float("inf"))
        return sorted((r for r in failing if r.latency_ms < bar), key=lambda r: r.latency_ms)
    return []


def repairs(
    plan: Sequence[registry.Candidate],
    results: Sequence[CandidateResult],
    reference: Path,
    ctx: StepContext,
    objective: str,
    config: FallbackConfig = FallbackConfig(),
) -> Iterator[registry.Candidate]:
    """Repaired plans for the failing candidates worth it (see `worth_repairing`), for the pipeline to measure."""
    if onnx_io.data_files(reference):  # one model per layer, each gigabytes past the threshold: hours of disk writes
        return
    by_name = {c.name: c for c in plan}
    chosen = [r for r in worth_repairing(results, objective) if any(layered(s) for s in by_name[r.name].steps)]
    for result in chosen[: config.max_repairs]:
        repaired = repair(by_name[result.name], reference, ctx, config, per_weight=objective == "size")
        if repaired is not None:
            yield repaired


def repair(
    candidate: registry.Candidate,
    reference: Path,
    ctx: StepContext,
    config: FallbackConfig = FallbackConfig(),
    per_weight: bool = False,
) -> registry.Candidate | None:
    """`candidate` with its most sensitive layers at higher precision, or None when it has no layers.
    `per_weight` ranks layers by sensitivity per weight element: what a kept layer costs in bytes."""
    indices = [i for i, step in enumerate(candidate.steps) if layered(step)]
    if not indices:
        return None
    folder = ctx.workdir / f"{candidate.name}{SUFFIX}"
    shutil.rmtree(folder, ignore_errors=True)
    trial = _Trial(candidate, reference, ctx, folder, config)
    layers = [(i, name) for i in indices for name in layered(candidate.steps[i]).quantizable(trial.model_before(i))]
    if not layers:
        return None
    with ctx.progress.task(f"fallback: layer sensitivity of {candidate.name}", total=len(layers)) as advance:
        scores = []
        for layer in layers:
            scores.append(trial.distance(trial.alone(layer, layers)))
            advance(1)
    if per_weight:
        scores = [score / trial.weights(layer) for score, layer in zip(scores, layers)]
    ranked = [layer for _, layer in sorted(zip(scores, layers), key=lambda pair: -pair[0])]
    limit = max(1, int(len(ranked) * config.max_fraction))
    _, passing = _smallest_passing(lambda k: trial.passes(trial.keeping(ranked[:k])), limit)
    kept = ranked[: passing or limit]  # none passed: the largest try is still worth a measured line in the table
    shutil.rmtree(folder, ignore_errors=True)
    names = ", ".join(name for _, name in kept[:3]) + (f" +{len(kept) - 3} more" if len(kept) > 3 else "")
    outcome = "" if passing else f" (not enough on calibration data at the {config.max_fraction:.0%} cap)"
    description = f"{candidate.description}; fallback kept {len(kept)} of {len(layers)} layers at higher precision{outcome}: {names}"
    return registry.Candidate(candidate.name + SUFFIX, trial.keeping(kept), description)


def _smallest_passing(passes, limit: int) -> tuple[int, int | None]:
    """Smallest k in 1..limit with passes(k), probing 1, 2, 4... then bisecting; (last tried, found or None)."""
    low, k = 0, 1
    while True:
        k = min(k, limit)
        if passes(k):
            break
        if k == limit:
            return k, None
        low, k = k, k * 2
    high = k
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle
    return high, high


class _Trial:
    """Builds variants of one candidate from a shared prefix and scores them on calibration samples."""

    def __init__(self, candidate: registry.Candidate, reference: Path, ctx: StepContext, folder: Path, config: FallbackConfig):
        self.candidate, self.ctx, self.folder, self.config = candidate, ctx, folder, config
        self.first = next(i for i, step in enumerate(candidate.steps) if layered(step))
        self.data = ctx.calibration.head(config.samples)
        output = ctx.spec.outputs[0].name
        self.output = output
        self.expected = run_model(reference, self.data, output)
        self._inputs = self._run(candidate.steps, reference, "layers")  # each step's input, to list its layers
        self.prefix = self._inputs[self.first]
        self._count = 0
        self._models: dict[int, onnx.ModelProto] = {}

    def model_before(self, index: int) -> onnx.ModelProto:
        return onnx.load(str(self._inputs[index]), load_external_data=False)

    def weights(self, layer: tuple[int, str]) -> int:
        """Elements of the layer's largest constant input: its weight matrix or table."""
        index, name = layer
        model = self._models.setdefault(index, self.model_before(index))
        sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
        node = next(n for n in model.graph.node if n.name == name)
        return max((sizes.get(i, 0) for i in node.input), default=0) or 1

    def alone(self, layer: tuple[int, str], layers: list[tuple[int, str]]) -> tuple:
        """Steps quantizing only `layer`; other layered steps keep all theirs in fp32 (skipped)."""
        index, name = layer
        steps = []
        for i, step in enumerate(self.candidate.steps[self.first :], start=self.first):
            view = layered(step)
            if view is None:
                steps.append(step)
            elif i == index:
                steps.append(view.keeping(tuple(n for j, n in layers if j == i and n != name), fp32=True))
        return tuple(steps)

    def keeping(self, kept: list[tuple[int, str]]) -> tuple:
        """The whole plan with `kept` layers at each step's higher precision."""
        steps = list(self.candidate.steps)
        for i in {i for i, _ in kept}:
            steps[i] = layered(steps[i]).keeping(tuple(n for j, n in kept if j == i))
        return tuple(steps)

    def distance(self, steps: tuple) -> float:
        """How far the outputs move from fp32's: 1 - cosine for embeddings, relative L2 error otherwise."""
        got, want = self._outputs(steps)
        if self.ctx.spec.task == "embedding":
            return 1.0 - task_metrics("embedding", got, want, None)["cosine"]
        return task_metrics("regression", got, want, None)["rel_error"]

    def passes(self, steps: tuple) -> bool:
        got, want = self._outputs(steps, prefixed=False)
        task = self.ctx.spec.task
        reference = task_metrics(task, want, want, self.data.labels)
        drop = with_drop(task, task_metrics(task, got, want, self.data.labels), reference, self.data.labels is not None)["drop"]
        return drop <= self.config.margin * self.ctx.spec.tolerance

    def _outputs(self, steps: tuple, prefixed: bool = True) -> tuple[np.ndarray, np.ndarray]:
        self._count += 1
        if prefixed:  # `alone` plans start at the first layered step: reuse the prefix built once
            path = self._run(steps, self.prefix, f"t{self._count}")[-1]
        else:
            path = self._run(steps[self.first :], self.prefix, f"t{self._count}")[-1]
        try:
            return run_model(path, self.data, self.output), self.expected
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)

    def _run(self, steps: Sequence, source: Path, name: str) -> list[Path]:
        """Every step in turn; returns the input file of each step, then the result."""
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        files = [source]
        for index, step in enumerate(steps, start=1):
            out = folder / f"{index}-{type(step).__name__}.onnx"
            with registry.quiet_quantizer():
                step.apply(files[-1], out, self.ctx)
            files.append(out)
        return files
