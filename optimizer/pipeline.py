"""`slimserve optimize`: spec -> fp32 reference -> candidates measured -> choice -> artifact folder."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort

from optimizer import candidates as registry
from optimizer.data import load_dataset
from optimizer.errors import CliError, SpecError
from optimizer.evaluate import Reference, TimingConfig, measure
from optimizer.export import export_fp32
from optimizer.search import Objective, choose, within_tolerance
from optimizer.spec import TARGETS, Spec, Where, check_tolerance, load_spec
from optimizer.table import print_plain, print_rich
from shared.artifact import MANIFEST, file_entries, load_artifact, write_manifest
from shared.manifest import CandidateResult, Manifest

MODEL_FILE = "model.onnx"


def optimize(
    spec_path: str | Path,
    *,
    target: str | None = None,
    out: str | Path | None = None,
    tolerance: float | None = None,
    quiet: bool = False,
    candidates: tuple[str, ...] | None = None,
    objective: Objective = "size",
    timing: TimingConfig = TimingConfig(),
) -> Path:
    """Optimize the model a spec describes; returns the artifact folder (verified by loading it back).

    Arguments override the spec (argument > spec). Raises SpecError for anything wrong with the spec,
    its model or its data; a candidate that fails to build is recorded as failed, not raised.
    """
    spec = _with_overrides(load_spec(spec_path), target, tolerance)
    folder = Path(out) if out is not None else Path("artifacts") / spec.name / spec.version
    _refuse_foreign(folder)
    try:
        plan = registry.select(candidates)
    except KeyError as exc:
        raise CliError(f"--candidates: {exc.args[0]}") from None
    progress = _Progress(quiet)
    with tempfile.TemporaryDirectory(prefix="slimserve-") as scratch:
        workdir = Path(scratch)
        # the model first: a spec that disagrees with it is best told in the model's terms, not the data's
        with progress.status(f"exporting {spec.source.path.name} to ONNX"):
            reference_path = export_fp32(spec, workdir / "reference.onnx")
        calibration = load_dataset(spec, "calibration")
        reference = Reference.of(reference_path, spec.task, load_dataset(spec, "evaluation"), spec.outputs[0].name)
        ctx = registry.StepContext(spec=spec, calibration=calibration, workdir=workdir)
        results, files = [], {}
        for candidate in plan:
            with progress.status(f"building and measuring {candidate.name}"):
                result, path = _try(candidate, reference_path, ctx, reference, timing)
            results.append(result)
            if path is not None:
                files[candidate.name] = path
        choice = choose(results, spec.tolerance, reference.metric, objective)
        extra = _extra(spec, reference, len(calibration), timing, objective)
        # fp32 only misses from `files` when its graph optimization failed: the plain export is fp32 too
        manifest = _write(folder, spec, files.get(choice.candidate, reference_path), results, choice, extra)
    load_artifact(folder)  # the runtime's own check: schema, sha256 of every file
    if quiet:
        print_plain(manifest, folder, sys.stdout)
    else:
        print_rich(manifest, folder)
    return folder


def optimize_command(args) -> int:
    optimize(args.spec, target=args.target, out=args.out, tolerance=args.tolerance, quiet=args.quiet)
    return 0


def _with_overrides(spec: Spec, target: str | None, tolerance: float | None) -> Spec:
    if target is not None:
        if target not in TARGETS:
            raise SpecError(f"--target {target!r} is not one of {', '.join(TARGETS)}")
        spec = dataclasses.replace(spec, target=target)
    if tolerance is not None:
        spec = dataclasses.replace(spec, tolerance=check_tolerance(tolerance, Where(Path("--tolerance"), "")))
    return spec


def _try(
    candidate: registry.Candidate, source: Path, ctx: registry.StepContext, reference: Reference, timing: TimingConfig
) -> tuple[CandidateResult, Path | None]:
    try:
        path = candidate.build(source, ctx)
        measured = measure(path, reference, timing)
    except Exception as exc:  # one broken candidate (a missing kernel, a quantizer bug) must not end the search
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return CandidateResult(candidate.name, 0, {}, 0.0, False, f"failed: {text}"), None
    ops = registry.quantized_ops(path)
    note = candidate.description + (f"; {ops}" if ops else "")
    ok = within_tolerance(measured.metrics["drop"], ctx.spec.tolerance)
    return CandidateResult(candidate.name, measured.bytes, measured.metrics, measured.latency_ms, ok, note), path


def _extra(spec: Spec, reference: Reference, calibration_samples: int, timing: TimingConfig, objective: str) -> dict:
    return {
        "optimizer": {
            "source": spec.source.path.name,
            "tolerance": spec.tolerance,
            "objective": objective,
            "metric": reference.metric,
            "reference_metrics": reference.metrics,
            "calibration_samples": calibration_samples,
            "evaluation_samples": len(reference.data),
            "latency": {"statistic": "p50", "batch": 1, "threads": timing.threads, "onnxruntime": ort.__version__},
        }
    }


def _write(folder: Path, spec: Spec, model: Path, results, choice, extra: dict) -> Manifest:
    """Build the artifact beside `folder`, then swap it in, so a failure never leaves half an artifact."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        shutil.copyfile(model, staging / MODEL_FILE)
        manifest = Manifest(
            name=spec.name,
            version=spec.version,
            task=spec.task,
            model_file=MODEL_FILE,
            files=file_entries(staging, [MODEL_FILE]),
            inputs=tuple(t.oip for t in spec.inputs),
            outputs=tuple(t.oip for t in spec.outputs),
            chosen=choice,
            candidates=tuple(results),
            target=spec.target,
            placement="function",
            delivery="bundle",
            extra=extra,
        )
        write_manifest(staging, manifest)
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _refuse_foreign(folder: Path) -> None:
    """Replacing --out deletes it: only ever an earlier artifact or an empty folder."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MANIFEST).is_file())):
        raise CliError(f"--out {folder} exists and is not an artifact folder; refusing to replace it")


class _Progress:
    def __init__(self, quiet: bool):
        self._console = None
        if not quiet:
            from rich.console import Console

            self._console = Console(stderr=True)

    def status(self, message: str):
        if self._console is None:
            return contextlib.nullcontext()
        return self._console.status(message)
