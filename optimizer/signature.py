"""Does an ONNX file have the spec's signature? Names, dtypes, ranks, fixed and dynamic axes.

Checked twice: statically on the graph's declared inputs/outputs, then by one onnxruntime run on
inputs shaped like the spec, because exporters often leave output shapes undeclared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from optimizer.spec import Spec, Tensor, Where

# Stand-ins for dynamic axes in example inputs: 2, not 1, so the legacy exporter cannot bake a
# broadcast-friendly batch of 1 into the graph; other dynamic axes (sequence...) get another size.
_EXAMPLE_BATCH = 2
_EXAMPLE_OTHER = 4


def example_inputs(tensors: tuple[Tensor, ...], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for tensor in tensors:
        shape = [(_EXAMPLE_BATCH if axis == 0 else _EXAMPLE_OTHER) if s == -1 else s for axis, s in enumerate(tensor.shape)]
        if tensor.dtype == "string":
            feeds[tensor.name] = np.full(shape, b"", dtype=object)
        elif np.dtype(tensor.dtype).kind == "f":
            feeds[tensor.name] = rng.random(shape).astype(tensor.dtype)
        else:  # zeros are valid token ids, class indices and booleans alike
            feeds[tensor.name] = np.zeros(shape, dtype=tensor.dtype)
    return feeds


def check_signature(path: Path, spec: Spec) -> None:
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    declared_inputs = [v for v in graph.input if v.name not in initializers]
    _same_names(declared_inputs, spec.inputs, spec.where("inputs"))
    _same_names(list(graph.output), spec.outputs, spec.where("outputs"))
    by_name = {v.name: v for v in declared_inputs}
    for index, tensor in enumerate(spec.inputs):
        _check_declared(by_name[tensor.name], tensor, spec.where("inputs")[index])
    by_name = {v.name: v for v in graph.output}
    for index, tensor in enumerate(spec.outputs):
        _check_declared(by_name[tensor.name], tensor, spec.where("outputs")[index], outputs=True)
    _check_run(path, spec)


def _same_names(declared: list, tensors: tuple[Tensor, ...], where: Where) -> None:
    have = [v.name for v in declared]
    want = [t.name for t in tensors]
    if sorted(have) != sorted(want):
        raise where.error(f"list {', '.join(want)}, but the model's are {', '.join(have) or 'none'}")


def _dtype_name(elem_type: int) -> str:
    if elem_type == onnx.TensorProto.STRING:
        return "string"
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def _check_declared(value: onnx.ValueInfoProto, tensor: Tensor, where: Where, outputs: bool = False) -> None:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise where.error(f"is a {kind} in the model, not a tensor")
    dtype = _dtype_name(value.type.tensor_type.elem_type)
    if dtype != tensor.dtype:
        raise (where / "dtype").error(f"{tensor.dtype!r} does not match the model's {dtype!r}")
    if not value.type.tensor_type.HasField("shape"):
        return  # undeclared; the run below checks what comes out
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
    if len(dims) != len(tensor.shape):
        raise (where / "shape").error(f"{list(tensor.shape)} has rank {len(tensor.shape)}, the model's is {len(dims)} ({dims})")
    for axis, (want, got) in enumerate(zip(tensor.shape, dims)):
        # A spec that fixes an axis the model leaves dynamic is only stricter, fine. An input the spec
        # calls dynamic but the model fixes would fail on the first other size; an output, harmlessly loose.
        if got == -1 or want == got or (outputs and want == -1):
            continue
        raise (where / "shape").error(f"{list(tensor.shape)} does not match the model's {dims} at axis {axis} (-1 = dynamic)")


def _check_run(path: Path, spec: Spec) -> None:
    feeds = example_inputs(spec.inputs)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        results = session.run([t.name for t in spec.outputs], feeds)
    except Exception as exc:  # onnxruntime's pybind errors
        shapes = ", ".join(f"{name} {list(a.shape)}" for name, a in feeds.items())
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise spec.where("inputs").error(f"do not suit the model: it fails on {shapes}: {text}") from None
    for index, (tensor, result) in enumerate(zip(spec.outputs, results)):
        where = spec.where("outputs")[index] / "shape"
        if result.ndim != len(tensor.shape) or any(s not in (-1, got) for s, got in zip(tensor.shape, result.shape)):
            raise where.error(f"{list(tensor.shape)} does not match what the model returns: {list(result.shape)}")
