"""ONNX models on disk, past protobuf's 2 GB: one file, or `NAME.onnx` + ONE external data file `NAME.onnx.data`.

Every optimizer step reads its input with `load` and writes its output with `save`, so a model of any size
flows through export, the candidates and the artifact the same way:

- `load` reads the graph without the weights (`load_external_data=False`): a tensor kept outside stays a
  reference to its bytes in the source's data file, and `weights_beside(src)` makes those references
  readable (onnxruntime's quantizers and `numpy_helper.to_array` resolve them against the working folder).
  A quantizer then holds one fp32 tensor at a time, not the model.
- `save` writes the tensors one by one: inline while the model's weights stay under the threshold, else
  every tensor of 1 KiB or more appended to `NAME.onnx.data` at a 4 KiB-aligned offset (onnxruntime maps
  aligned offsets instead of copying them), read from the source's data file only when it is written.
  One data file, never one per tensor (what torch's exporter writes past 2 GB, and what the manifest
  would have to list file by file).

The threshold is SLIMSERVE_EXTERNAL_DATA_BYTES (default 2,000,000,000: under protobuf's 2 GiB with room
for the graph itself); tests set it low so the external-data path runs on a tiny model in seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import TensorProto, external_data_helper

from optimizer.errors import SpecError

THRESHOLD_ENV = "SLIMSERVE_EXTERNAL_DATA_BYTES"
DEFAULT_THRESHOLD = 2_000_000_000
DATA_SUFFIX = ".data"
MIN_EXTERNAL = 1024  # smaller tensors (shapes, scalars) stay in the graph, as onnx.save_model's size_threshold
_ALIGN = 4096
_CHUNK = 16 << 20


def threshold() -> int:
    """Model weights above this many bytes are written as external data (read when asked, never at import)."""
    raw = os.environ.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise SpecError(f"{THRESHOLD_ENV}={raw!r} must be a positive number of bytes")
    return value


def data_name(model: Path) -> str:
    return model.name + DATA_SUFFIX


def load(path: Path) -> onnx.ModelProto:
    """The graph, with weights stored outside left as references (see `weights_beside`)."""
    return onnx.load(str(path), load_external_data=False)


@contextlib.contextmanager
def weights_beside(path: Path) -> Iterator[None]:
    """Run with the model's folder as the working folder, where its external data references resolve."""
    with contextlib.chdir(path.resolve().parent):
        yield


def data_files(path: Path) -> list[Path]:
    """The external data files a model file reads, beside it (none for a self-contained model)."""
    return [path.parent / name for name in sorted({_location(t) for t in _tensors(load(path)) if _external(t)})]


def model_bytes(path: Path) -> int:
    """The model file plus its external data: what a candidate weighs on disk."""
    return path.stat().st_size + sum(p.stat().st_size for p in data_files(path))


def save(model: onnx.ModelProto, dst: Path, source: Path | None = None) -> Path:
    """Write `model` to `dst` (and `dst.data` when its weights pass the threshold). `source`: the file whose
    folder its external references are relative to (the step's input); those bytes are copied, never loaded
    all at once. The model proto is changed in place (its tensors end up pointing at `dst`'s data file)."""
    if source is not None and dst.resolve() == source.resolve():
        raise ValueError(f"{dst}: a step writes a new file, never its own input")
    base = (source or dst).resolve().parent
    dst.parent.mkdir(parents=True, exist_ok=True)
    tensors = list(_tensors(model))
    stale = dst.parent / data_name(dst)
    big = sum(_nbytes(t, base) for t in tensors) > threshold()
    partial = stale.with_name(stale.name + ".partial")
    if big:
        with open(partial, "wb") as out:
            for tensor in tensors:
                if _nbytes(tensor, base) >= MIN_EXTERNAL:
                    _write_outside(tensor, out, base, stale.name)
                elif _external(tensor):
                    _inline(tensor, base)
    else:
        for tensor in tensors:
            if _external(tensor):
                _inline(tensor, base)
    onnx.save(model, str(dst))
    if big:
        os.replace(partial, stale)
    elif stale.exists():
        stale.unlink()
    return dst


def copy(src: Path, dst: Path) -> Path:
    """`src` as `dst`, its data file renamed to match (`dst.data`): copied whole when it is one file. Not
    hard-linked: onnx refuses a data file with several links (it could be a planted alias of another file)."""
    model = load(src)
    files = {_location(t) for t in _tensors(model) if _external(t)}
    if len(files) != 1:
        return save(model, dst, src)
    (location,) = files
    for tensor in _tensors(model):
        if _external(tensor):
            _set_location(tensor, data_name(dst))
    target = dst.parent / data_name(dst)
    target.unlink(missing_ok=True)
    shutil.copyfile(src.parent / location, target)
    onnx.save(model, str(dst))
    return dst


def _tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor that can hold weights: initializers and Constant values, subgraphs included."""
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR:
                    yield attribute.t
                elif attribute.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attribute.graphs)


def _external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def _info(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _location(tensor: TensorProto) -> str:
    return _info(tensor)["location"]


def _set_location(tensor: TensorProto, location: str) -> None:
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location


def _nbytes(tensor: TensorProto, base: Path) -> int:
    if _external(tensor):
        info = _info(tensor)
        if "length" in info:
            return int(info["length"])
        # torch's TorchScript exporter writes one file per tensor and no length: the rest of the file is the tensor
        return (base / info["location"]).stat().st_size - int(info.get("offset", 0))
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return tensor.ByteSize()  # typed fields (float_data...): about their size, enough to decide


def _inline(tensor: TensorProto, base: Path) -> None:
    external_data_helper.load_external_data_for_tensor(tensor, str(base))
    tensor.data_location = TensorProto.DEFAULT
    del tensor.external_data[:]


def _write_outside(tensor: TensorProto, out, base: Path, location: str) -> None:
    """Append the tensor's bytes at the next aligned offset of `out` and point the tensor there."""
    offset = -out.tell() % _ALIGN
    out.write(b"\0" * offset)
    start = out.tell()
    if _external(tensor):
        info = _info(tensor)
        length = int(info["length"]) if "length" in info else None
        with open(base / info["location"], "rb") as src:
            src.seek(int(info.get("offset", 0)))
            left = length if length is not None else -1
            while left:
                chunk = src.read(_CHUNK if left < 0 else min(left, _CHUNK))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk) if left > 0 else 0
    else:
        if not tensor.HasField("raw_data"):  # typed fields: the raw little-endian bytes onnx would write
            array = onnx.numpy_helper.to_array(tensor)
            tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
        out.write(tensor.raw_data)
        tensor.ClearField("raw_data")
    length = out.tell() - start
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(start)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
