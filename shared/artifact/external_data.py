"""Which files an ONNX model reads its weights from (external data), found without the `onnx` package.

A model over 2 GB keeps its tensors in side files named by `TensorProto.external_data["location"]`.
That name is an input like any other: `../../etc/shadow` or a file nobody hashed. onnxruntime 1.32
refuses locations that leave the model's folder, but older releases did not, and it happily reads an
unlisted file inside it. So the artifact loader asks this module for every location and accepts a model
only when each one is a file listed in the manifest (hence sha256-checked) inside the artifact folder.

The runtime ships without `onnx` (it is 20 MB), so this walks the protobuf wire format itself, only
through the messages that can hold a tensor. Field numbers are ONNX's, stable since IR version 3:

    ModelProto         graph=7  training_info=20  functions=25
    GraphProto         node=1  initializer=5  sparse_initializer=15
    NodeProto          attribute=5
    AttributeProto     t=5  g=6  tensors=10  graphs=11  sparse_tensor=22  sparse_tensors=23
    FunctionProto      node=7  attribute_proto=11
    TrainingInfoProto  initialization=1  algorithm=2
    SparseTensorProto  values=1  indices=2
    TensorProto        external_data=13 (StringStringEntryProto key=1 value=2)  data_location=14
"""

from __future__ import annotations

import mmap
from pathlib import Path

from shared.errors import ArtifactError

# message kind -> {field number: kind of the embedded message}
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "training": {1: "graph", 2: "graph"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_EXTERNAL_DATA, _KEY, _VALUE = 13, 1, 2


class _Malformed(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, start, end) of each length-delimited field; other wire types are skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Malformed
            yield number, pos, pos + length
            pos += length
        else:  # groups (3, 4) never appear in ONNX; anything else is not protobuf
            raise _Malformed
    if pos != end:
        raise _Malformed


def _location(buf, start: int, end: int) -> str | None:
    key = value = None
    for number, s, e in _fields(buf, start, end):
        if number in (_KEY, _VALUE):
            raw = bytes(buf[s:e])
            try:  # strictly: a location decoded with replacements could name a listed file that ORT never opens
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _Malformed from None
            if "\x00" in text:
                raise _Malformed
            key, value = (text, value) if number == _KEY else (key, text)
    return value if key == "location" else None


def external_locations(buf) -> set[str]:
    """Every external-data `location` named anywhere in a serialized ModelProto."""
    found: set[str] = set()
    stack = [("model", 0, len(buf))]
    while stack:
        kind, start, end = stack.pop()
        children = _CHILDREN.get(kind, {})
        for number, s, e in _fields(buf, start, end):
            if kind == "tensor":
                if number == _EXTERNAL_DATA:
                    location = _location(buf, s, e)
                    if location is not None:
                        found.add(location)
            elif number in children:
                stack.append((children[number], s, e))
    return found


def check_external_data(path: Path, folder: Path, listed: set[str]) -> None:
    """Refuse the model at `path` when it reads weights from a file outside `folder` or not in `listed`
    (paths relative to `folder`). onnxruntime resolves locations against the model's own folder, so a
    model that is not inside `folder` (an inflated copy in the cache) may read no external data at all."""
    with open(path, "rb") as fh:
        if path.stat().st_size == 0:
            raise ArtifactError(f"{folder}: {path.name} is empty, not an ONNX model")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                locations = external_locations(buf)
            except _Malformed:
                raise ArtifactError(f"{folder}: {path.name} is not a valid ONNX protobuf; refusing to load") from None
    root = folder.resolve()
    base = path.resolve().parent
    for location in sorted(locations):
        resolved = (base / location).resolve()
        if location.startswith(("/", "\\")) or not resolved.is_relative_to(root):
            raise ArtifactError(
                f"{folder}: {path.name} reads external data from {location!r}, outside the artifact folder; refusing to load"
            )
        if resolved.relative_to(root).as_posix() not in listed:
            raise ArtifactError(
                f"{folder}: {path.name} reads external data from {location!r}, which the manifest does not list "
                "(so nothing checked its sha256); refusing to load"
            )
