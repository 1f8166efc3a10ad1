"""`slimserve optimize`: spec -> fp32 reference -> candidates measured -> choice under the target's budget
-> artifact folder (model, manifest.json, report.md, pareto.png)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import onnxruntime as ort

from optimizer import candidates as registry
from optimizer import onnx_io, report
from optimizer.budget import Budget, Fit, Footprint, budget_for, deflated_size, fit, footprint
from optimizer.data import load_dataset
from optimizer.errors import CliError, NotApplicable, SpecError
from optimizer.evaluate import Reference, TimingConfig, measure
from optimizer.export import export_fp32
from optimizer.fallback import repairs
from optimizer.params import count_parameters
from optimizer.precision import cpu_features
from optimizer.progress import counted, progress_for
from optimizer.search import Decision, Objective, decide, within_tolerance
from optimizer.serving_facts import cold_start, objective_costs, probe_all, serving_extra
from optimizer.serving_facts import facts as serving_facts
from optimizer.serving_probe import Plan
from optimizer.serving_probe import plan as probe_plan
from optimizer.sparse import compression, inflate_to
from optimizer.spec import TARGETS, Spec, Where, check_tolerance, load_spec
from optimizer.steps import StepContext
from optimizer.table import print_table
from optimizer.text_artifact import ship_text_files, text_extra
from optimizer.timing import paired
from optimizer.training_spec import Distill
from shared.artifact.fetch import manifest_digest
from shared.artifact.loading import MANIFEST, file_entries, load_artifact, sha256_of, write_manifest
from shared.artifact.manifest import EXTERNAL_DATA, INFLATED, CandidateResult, Manifest

MODEL_FILE = "model.onnx"


def optimize(
    spec_path: str | Path,
    *,
    target: str | None = None,
    out: str | Path | None = None,
    tolerance: float | None = None,
    quiet: bool = False,
    candidates: tuple[str, ...] | None = None,
    objective: Objective | None = None,
    timing: TimingConfig = TimingConfig(),
    max_bytes: int | None = None,
    distill: str | None = None,
    budget: Budget | None = None,
    direct_upload: bool = False,
) -> Path:
    """Optimize the model a spec describes; returns the artifact folder (verified by loading it back).

    Arguments override the spec (argument > spec). Raises SpecError for anything wrong with the spec,
    its model or its data; a candidate that fails to build is recorded as failed, not raised. A model
    that fits no function is not an error either: the artifact says `placement: endpoint` and why.
    `budget` replaces the target's (tests); `max_bytes` caps the model file's bytes in it; `direct_upload`
    holds the bundle to the limits of a package sent straight to the platform (Lambda's 50 MiB zipped).
    """
    spec = _with_distill(_with_overrides(load_spec(spec_path), target, tolerance), distill)
    budget = budget or budget_for(spec.target, direct_upload=direct_upload)
    objective = objective or spec.objective  # type: ignore[assignment]
    if max_bytes is not None:
        if max_bytes < 1:
            raise SpecError(f"--max-bytes {max_bytes} must be a positive number of bytes")
        budget = dataclasses.replace(budget, max_model_bytes=max_bytes)
    folder = Path(out) if out is not None else Path("artifacts") / spec.name / spec.version
    _refuse_foreign(folder)
    try:
        plan = registry.select(candidates)
    except KeyError as exc:
        raise CliError(f"--candidates: {exc.args[0]}") from None
    with tempfile.TemporaryDirectory(prefix="slimserve-") as scratch, progress_for(quiet) as progress:
        workdir = Path(scratch)
        # the model first: a spec that disagrees with it is best told in the model's terms, not the data's
        with progress.status(f"exporting {spec.source.path.name} to ONNX"):
            reference_path = export_fp32(spec, workdir / "reference.onnx")
        calibration = load_dataset(spec, "calibration")
        reference = Reference.of(reference_path, spec.task, load_dataset(spec, "evaluation"), spec.outputs[0].name)
        ctx = StepContext(spec=spec, calibration=calibration, workdir=workdir, progress=progress)
        results, files, sizes, speedups = [], {}, {}, {}
        with progress.task("candidates", total=len(plan)) as advance:
            # then the op-wise fallback: failing candidates that could still win, sensitive layers kept higher
            planned = itertools.chain(plan, repairs(plan, results, reference_path, ctx, objective))
            for candidate in counted(planned, advance, len(plan)):
                advance(0, description=f"candidates: {candidate.name}")
                # every candidate is timed against fp32 (plan[0]) in alternation; fp32 against itself
                baseline = files.get(registry.FP32, reference_path)
                result, path, size, speedup = _try(candidate, reference_path, ctx, reference, timing, baseline)
                results.append(result)
                if path is not None:
                    files[candidate.name], sizes[candidate.name], speedups[candidate.name] = path, size, speedup
        runnables = {name: _runnable(path) for name, path in files.items()}
        with progress.status("measuring serving memory: a fresh runtime process per candidate"):
            servings, failures = probe_all(runnables, _probe_plan(spec), timing.threads)
        fits = {name: fit(size, budget, servings.get(name)) for name, size in sizes.items()}
        by_name = {r.name: r for r in results}
        served = {name: serving_facts(budget.target, by_name[name], servings.get(name), timing.threads) for name in files}
        decision = decide(results, fits, budget, spec.tolerance, reference.metric, objective, objective_costs(served))
        extra = _extra(spec, reference, len(calibration), timing, objective)
        extra["optimizer"]["candidates"] = _facts(files, sizes, fits, speedups, served, failures)
        name = decision.choice.candidate
        # an endpoint-placed model is not served by the function: its memory is not the function's to size
        if name in sizes and decision.placement == "function":
            cold = cold_start(sizes[name], fits[name], budget, servings.get(name))
            extra["serving"] = serving_extra(budget, served.get(name, {}), servings.get(name), cold, failures.get(name))
        # fp32 only misses from `files` when its graph optimization failed: the plain export is fp32 too
        model = files.get(decision.choice.candidate, reference_path)
        manifest = _write(folder, spec, model, results, decision, extra, _budget(budget, fits.get(decision.choice.candidate)))
    load_artifact(folder)  # the runtime's own check: schema, sha256 of every file
    print_table(manifest, folder, quiet)
    if decision.placement == "function":
        _print_serving(manifest.extra.get("serving", {}), budget.target)
    digest = manifest_digest(folder)
    print(f"slimserve: manifest sha256 {digest}; a copy in object storage is pinned as SLIMSERVE_ARTIFACT=PREFIX#sha256={digest}")
    if decision.placement == "endpoint":
        print(
            f"slimserve: {manifest.name} fits no {budget.target} function; placement endpoint "
            f"(closest: {decision.closest}); see {folder / report.REPORT}"
        )
    return folder


def optimize_command(args) -> int:
    optimize(
        args.spec,
        target=args.target,
        out=args.out,
        tolerance=args.tolerance,
        quiet=args.quiet,
        candidates=tuple(n.strip() for n in args.candidates.split(",") if n.strip()) if args.candidates else None,
        objective=args.objective,  # None: the spec's
        max_bytes=args.max_bytes,
        distill=args.distill,
        direct_upload=args.direct_upload,
    )
    return 0


def _with_overrides(spec: Spec, target: str | None, tolerance: float | None) -> Spec:
    if target is not None:
        if target not in TARGETS:
            raise SpecError(f"--target {target!r} is not one of {', '.join(TARGETS)}")
        spec = dataclasses.replace(spec, target=target)
    if tolerance is not None:
        spec = dataclasses.replace(spec, tolerance=check_tolerance(tolerance, Where(Path("--tolerance"), "")))
    return spec


def _with_distill(spec: Spec, student: str | None) -> Spec:
    """`--distill STUDENT`: a TorchScript .pt student to train, or a width in (0, 1] to derive one."""
    if student is None:
        return spec
    try:
        width = float(student)
    except ValueError:
        path = Path(student)
        if path.suffix != ".pt" or not path.is_file():
            raise SpecError(f"--distill {student!r} is neither a width in (0, 1] nor an existing TorchScript .pt file") from None
        return dataclasses.replace(spec, distill=dataclasses.replace(spec.distill, student=path))
    if not 0 < width <= 1:
        raise SpecError(f"--distill {student!r}: a width must be > 0 and <= 1")
    return dataclasses.replace(spec, distill=Distill(student=None, width=width, training=spec.distill.training))


def _try(
    candidate: registry.Candidate,
    source: Path,
    ctx: StepContext,
    reference: Reference,
    timing: TimingConfig,
    baseline: Path,
) -> tuple[CandidateResult, Path | None, Footprint | None, float | None]:
    try:
        path = candidate.build(source, ctx)
        # a compressed candidate runs as the runtime will run it, inflated; it weighs what it ships as
        runnable = inflate_to(path, path.with_suffix(".inflated.onnx")) if compression(path) else path
        with ctx.progress.status(f"evaluating {candidate.name}"):
            measured = measure(runnable, reference, _NO_TIMING)
            timed = paired(runnable, baseline if candidate.name != registry.FP32 else runnable, reference.data, timing)
    except NotApplicable as exc:  # e.g. structured pruning of a model that is not a Sequential chain
        return CandidateResult(candidate.name, 0, {}, 0.0, False, f"skipped: {exc}"), None, None, None
    except Exception as exc:  # one broken candidate (a missing kernel, a quantizer bug) must not end the search
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return CandidateResult(candidate.name, 0, {}, 0.0, False, f"failed: {text}"), None, None, None
    ops = registry.quantized_ops(runnable)
    note = candidate.description + (f"; {ops}" if ops else "")
    if runnable != path:
        note += f"; {runnable.stat().st_size:,} bytes inflated"
    ok = within_tolerance(measured.metrics["drop"], ctx.spec.tolerance)
    size = _footprint(path, runnable)
    result = CandidateResult(candidate.name, size.deployed, measured.metrics, timed.latency_ms, ok, note)
    return result, path, size, timed.speedup


def _footprint(path: Path, runnable: Path) -> Footprint:
    """The budget's footprint, counting a model's external data file with it (deployed, zipped and loaded)."""
    data = [] if compression(path) else onnx_io.data_files(path)
    if not data:
        return footprint(path, runnable)
    total = onnx_io.model_bytes(path)
    return Footprint(total, sum(deflated_size(p) for p in (path, *data)), total)


# metrics come from `measure`, latency from `paired` (alternating with fp32): measure's own timing is skipped
_NO_TIMING = TimingConfig(warmup=0, runs=1, max_seconds=0.0)


def _runnable(path: Path) -> Path:
    return path.with_suffix(".inflated.onnx") if compression(path) else path


def _probe_plan(spec: Spec) -> Plan:
    text = text_extra(spec).get("text", {})
    return probe_plan([t.oip.shape for t in spec.inputs], text.get("max_length"))


def _print_serving(serving: dict, target: str) -> None:
    """The figures the deploy needs: the memory to give the function (serverless.yml reads it too) and the cost."""
    if not serving.get("measured"):
        print(f"slimserve: serving memory not measured ({serving.get('why', 'no candidate')}); memory stays the deploy's default")
        return
    cost = next(iter(serving.get("cost", {}).values()), None)
    priced = f"; ${cost['per_million_usd']:.4f} per million requests on {target} {cost['arch']}" if cost else ""
    peak = f"peak RSS {serving['peak_rss_bytes'] / 2**20:,.0f} MiB at {serving['batch']} rows x {serving['headroom']:g}"
    cold = f"cold start ~{serving['cold_start']['total_s']:.2f} s"
    print(f"slimserve: recommended memory {serving['recommended_memory_mb']} MB ({peak}){priced}; {cold}")


def _facts(
    files: dict[str, Path], sizes: dict[str, Footprint], fits: dict[str, Fit], speedups: dict[str, float], served: dict, failures: dict
) -> dict:
    """Per candidate: what it weighs and holds, where it would run, what serving it takes and costs (report.md, pareto.png, tests)."""
    out = {}
    for name, path in files.items():
        runnable = _runnable(path)
        size, where = sizes[name], fits[name]
        out[name] = {
            "parameters": count_parameters(runnable),
            "deployed_bytes": size.deployed,
            "zipped_bytes": size.zipped,
            "inflated_bytes": size.inflated,
            "compression": compression(path),
            "delivery": where.delivery,
            "fit": where.reason,
            "memory_bytes": where.memory,
            "cold_start_s": round(where.cold_start_s, 3),
            "speedup_vs_fp32": round(speedups[name], 3),  # median per-round ratio, timed in alternation
            "memory_measured": where.measured,
            **served.get(name, {}),
            **({"serving_probe": failures[name]} if name in failures else {}),
        }
    return out


def _budget(budget: Budget, chosen: Fit | None) -> dict:
    out = budget.to_dict()
    if chosen is not None:
        out["chosen"] = {
            "memory_bytes": chosen.memory,
            "cold_start_s": round(chosen.cold_start_s, 3),
            "fit": chosen.reason,
            "measured": chosen.measured,
        }
    return out


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
            "latency": {
                "statistic": "p50",
                "batch": 1,
                "threads": timing.threads,
                "onnxruntime": ort.__version__,
                "method": "rounds alternating with fp32 (optimizer/timing.py)",
            },
            "cpu": cpu_features(),  # int8 candidates were measured (and reduce_range chosen) on this CPU
        },
        **text_extra(spec),
    }


def _write(folder: Path, spec: Spec, model: Path, results, decision: Decision, extra: dict, budget: dict) -> Manifest:
    """Build the artifact beside `folder`, then swap it in, so a failure never leaves half an artifact."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        packed = compression(model)
        model_file = f"{MODEL_FILE}.{packed}" if packed else MODEL_FILE
        if packed:
            shutil.copyfile(model, staging / model_file)
        else:  # with its external data file, if it has one, renamed to model.onnx.data
            onnx_io.copy(model, staging / model_file)
        external = [p.name for p in onnx_io.data_files(staging / model_file)] if not packed else []
        if external:
            extra = {**extra, EXTERNAL_DATA: external}
        shipped = [model_file, *external, *ship_text_files(spec, staging)]
        if packed:  # what the runtime checks the inflated copy against (shared/artifact/inflate.py)
            inflated = model.with_suffix(".inflated.onnx")
            extra = {**extra, INFLATED: {"sha256": sha256_of(inflated), "bytes": inflated.stat().st_size}}
        manifest = Manifest(
            name=spec.name,
            version=spec.version,
            task=spec.task,
            model_file=model_file,
            files=file_entries(staging, shipped),
            inputs=tuple(t.oip for t in spec.inputs),
            outputs=tuple(t.oip for t in spec.outputs),
            chosen=decision.choice,
            candidates=tuple(results),
            target=spec.target,
            placement=decision.placement,
            delivery=decision.delivery,
            budget=budget,
            extra=extra,
        )
        written = report.write(staging, manifest)
        manifest = dataclasses.replace(manifest, files=file_entries(staging, [*shipped, *written]))
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
