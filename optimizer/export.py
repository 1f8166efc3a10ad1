"""Source model -> one self-contained fp32 ONNX file whose signature is the spec's.

Which exporter, measured with torch 2.13:
- TorchScript (`.pt`): `torch.jit.load` gives a ScriptModule, which only the legacy TorchScript exporter
  takes (`dynamo=False`; the dynamo path cannot turn `dynamic_axes` into `dynamic_shapes` for it).
- ExportedProgram (`.pt2`): `torch.export.load` then the dynamo exporter. Its dynamic axes are the ones the
  program was exported with (`torch.export.export(..., dynamic_shapes=...)`); a program traced with a
  static batch keeps it, and the signature check below says so.
- ONNX (`.onnx`): checked with `onnx.checker` (by path, so past 2 GB too) and copied.

Past protobuf's 2 GB, the TorchScript exporter writes one external-data file per tensor and the dynamo one
a data file of its own naming; every exporter writes into a scratch folder, and `onnx_io.save` gathers the
result into `dst` alone, or `dst` + one `dst.data` past SLIMSERVE_EXTERNAL_DATA_BYTES.

Whatever the source, `check_signature` then runs the model once with onnxruntime on inputs shaped like the
spec, so a wrong name, dtype or axis is one SpecError line, never a traceback later.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from optimizer import onnx_io
from optimizer.errors import SpecError
from optimizer.export_common import OPSET, error_line, quiet_exporters, scratch_export
from optimizer.shape_hint import shape_error
from optimizer.signature import check_signature, example_inputs
from optimizer.spec import Spec

if TYPE_CHECKING:  # torch loads only when an export runs
    import torch


def export_fp32(spec: Spec, dst: Path) -> Path:
    """Write the fp32 reference model to `dst` and check it against the spec's signature."""
    kind = spec.source.kind
    dst.parent.mkdir(parents=True, exist_ok=True)
    if kind == "onnx":
        _copy_onnx(spec, dst)
    elif kind == "torchscript":
        _export_torchscript(spec, dst)
    elif kind == "transformers":  # checks its own signature: the graph takes tokens, the spec texts
        from optimizer.hf_export import export_transformers

        return export_transformers(spec, dst)
    else:
        _export_program(spec, dst)
    check_signature(dst, spec)
    return dst


def _copy_onnx(spec: Spec, dst: Path) -> None:
    where = spec.where("source.path")
    try:
        onnx.checker.check_model(str(spec.source.path), full_check=True)
        model = onnx_io.load(spec.source.path)  # external data beside it is copied tensor by tensor
    except Exception as exc:  # onnx raises ValidationError, DecodeError, OSError...
        raise where.error(f"is not a valid ONNX model: {error_line(exc)}") from None
    onnx_io.save(model, dst, spec.source.path)


def _export_torchscript(spec: Spec, dst: Path) -> None:
    import torch

    where = spec.where("source.path")
    try:
        with quiet_exporters():  # torch 2.13 marks torch.jit.load deprecated; TorchScript is still a format we take
            module = torch.jit.load(str(spec.source.path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError with a C++ backtrace
        raise where.error(f"is not a TorchScript file torch.jit.load can read: {error_line(exc)}") from None
    export_module(module, spec, dst)


def export_module(module: torch.nn.Module, spec: Spec, dst: Path) -> None:
    """The legacy exporter with the spec's names and dynamic axes. The fp32 reference and every torch-side
    candidate (pruned, distilled) go through this one call, so their graphs share names and axes."""
    import torch

    module.eval()
    args = tuple(torch.from_numpy(a) for a in example_inputs(spec.inputs).values())
    with quiet_exporters(), torch.no_grad():
        try:  # eagerly first: a shape the model cannot take is told in the model's terms, not the exporter's
            module(*args)
        except Exception as exc:
            raise shape_error(module, spec, exc) from None
    dynamic = {t.name: {axis: f"{t.name}_{axis}" for axis, s in enumerate(t.shape) if s == -1} for t in spec.inputs + spec.outputs}
    with quiet_exporters(), torch.no_grad(), scratch_export(dst) as scratch:
        try:
            torch.onnx.export(
                module,
                args,
                str(scratch),
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                dynamic_axes={name: axes for name, axes in dynamic.items() if axes},
                opset_version=OPSET,
                dynamo=False,
            )
        except Exception as exc:
            raise _run_error(spec, exc) from None


def _export_program(spec: Spec, dst: Path) -> None:
    import torch

    where = spec.where("source.path")
    try:
        program = torch.export.load(str(spec.source.path))
    except Exception as exc:
        raise where.error(f"is not an ExportedProgram torch.export.load can read: {error_line(exc)}") from None
    with quiet_exporters(), scratch_export(dst) as scratch:
        try:
            torch.onnx.export(
                program,
                (),
                str(scratch),
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        except Exception as exc:
            raise _run_error(spec, exc) from None


def _run_error(spec: Spec, exc: Exception) -> SpecError:
    shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in spec.inputs)
    return spec.where("inputs").error(f"do not suit the model ({shapes}); the exporter said: {error_line(exc)}")
