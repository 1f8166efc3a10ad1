"""A request against a model's signature (the manifest's inputs and outputs): the checks every door's
requests pass, in the data plane, before any model runs."""

from __future__ import annotations

import math

from shared.artifact.manifest import Manifest, TensorSpec
from shared.errors import InvalidTensor
from shared.protocol.codec import RequestedOutput


def check_input(manifest: Manifest, name: str, datatype: str, shape: list[int] | tuple[int, ...]) -> TensorSpec:
    """A tensor's header (before its data is decoded, so a wrong one costs nothing)."""
    spec = next((s for s in manifest.inputs if s.name == name), None)
    if spec is None:
        expected = ", ".join(s.name for s in manifest.inputs)
        raise InvalidTensor(f"input {name[:64]!r} is not an input of model {manifest.name!r}; expected {expected}")
    if datatype != spec.datatype:
        raise InvalidTensor(f"input {name!r} has datatype {datatype}, model {manifest.name!r} expects {spec.datatype}")
    if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
        raise InvalidTensor(f"input {name!r} has shape {list(shape)}, model {manifest.name!r} expects {list(spec.shape)} (-1 = any)")
    if math.prod(shape) == 0:
        raise InvalidTensor(f"input {name!r} has shape {list(shape)}: an empty tensor")
    return spec


def check_complete(manifest: Manifest, names: list[str]) -> None:
    missing = [s.name for s in manifest.inputs if s.name not in names]
    if missing:
        raise InvalidTensor(f"model {manifest.name!r} needs input(s) {', '.join(missing)}")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise InvalidTensor(f"input(s) {', '.join(duplicates)} given more than once")


def output_names(manifest: Manifest) -> list[str]:
    return [o.name for o in manifest.outputs]


def select_outputs(manifest: Manifest, requested: list[RequestedOutput] | None, binary_output: bool) -> list[tuple[str, bool]]:
    """(name, binary?) of the outputs a response carries: all, or those asked for (each once, known)."""
    known = output_names(manifest)
    if requested is None:
        return [(n, binary_output) for n in known]
    unknown = [o.name[:64] for o in requested if o.name not in known]
    if unknown:
        raise InvalidTensor(f"unknown output(s) {', '.join(unknown)}; model {manifest.name!r} has {', '.join(known)}")
    names = [o.name for o in requested]
    if len(set(names)) != len(names):  # the codec refuses repeats; requests built elsewhere too
        raise InvalidTensor(f"output(s) requested more than once: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return [(o.name, o.binary or binary_output) for o in requested]
