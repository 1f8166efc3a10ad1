"""When a spec's input shape does not suit a torch model: say which shape the model takes, in one line.

A wrong shape fails deep in the graph ("mat1 and mat2 shapes cannot be multiplied (2x2304 and 2048x256)"),
which names no input. The model's first layer says how many channels or features it takes and the rank;
the spatial size a conv net's head was built for is found by running it on square sizes, smallest first,
within a few seconds. Only what ran is reported as what the model takes; otherwise the first layer's rule.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from optimizer.errors import SpecError
from optimizer.export_common import error_line
from optimizer.spec import Spec

if TYPE_CHECKING:  # torch loads only when an export runs
    import torch

_CONV = {"Conv1d": 1, "Conv2d": 2, "Conv3d": 3}
_SEARCH_S = 5.0
_LARGEST_SIDE = 512


def shape_error(module: torch.nn.Module, spec: Spec, exc: BaseException) -> SpecError:
    given = ", ".join(f"{t.name} {list(t.shape)}" for t in spec.inputs)
    said = f"torch said: {error_line(exc)}"
    layer = _first_layer(module)
    if layer is None or len(spec.inputs) != 1:
        return spec.where("inputs").error(f"do not suit the model ({given}); {said}")
    name, kind, weight = layer
    found = _runs_on(module, _candidates(kind, weight, spec.inputs[0].shape), spec.inputs[0].dtype)
    first = f"its first layer {name} is {kind} with weight {list(weight.shape)}"
    if found is not None:
        wants = f"the model runs on [-1, {', '.join(map(str, found[1:]))}] ({first})"
    else:
        wants = f"{first}, so it takes {_rule(kind, weight)}"
    return spec.where("inputs").error(f"do not suit the model: the spec gives {given}; {wants}; {said}")


def _first_layer(module: torch.nn.Module) -> tuple[str, str, torch.Tensor] | None:
    """The first conv, linear or embedding layer in definition order (TorchScript keeps `original_name`)."""
    for name, sub in module.named_modules():
        kind = getattr(sub, "original_name", type(sub).__name__)
        weight = getattr(sub, "weight", None)
        if kind in (*_CONV, "Linear", "Embedding") and weight is not None:
            return name or "(the model)", kind, weight
    return None


def _channels(kind: str, weight: torch.Tensor) -> int:
    return int(weight.shape[1]) if kind in _CONV or kind == "Linear" else 0


def _rule(kind: str, weight: torch.Tensor) -> str:
    if kind in _CONV:
        spatial = ", ".join("DHW"[-_CONV[kind] :])
        return f"[N, {_channels(kind, weight)}, {spatial}]"
    if kind == "Linear":
        return f"[..., {_channels(kind, weight)}]"
    return "integer token ids [N, T]"


def _candidates(kind: str, weight: torch.Tensor, given: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes to try (batch 2): the spec's own spatial sizes with the layer's channels, then squares."""
    if kind == "Linear":
        return [(2, _channels(kind, weight))]
    if kind not in _CONV:
        return []
    rank, channels = _CONV[kind], _channels(kind, weight)
    tried = []
    if len(given) == rank + 2 and all(s > 0 for s in given[2:]):
        tried.append((2, channels, *given[2:]))
    return tried + [(2, channels, *([side] * rank)) for side in range(1, _LARGEST_SIDE + 1)]


def _runs_on(module: torch.nn.Module, shapes: list[tuple[int, ...]], dtype: str) -> tuple[int, ...] | None:
    import torch

    deadline = time.monotonic() + _SEARCH_S
    with torch.no_grad():
        for shape in shapes:
            if time.monotonic() > deadline:
                return None
            try:
                module(torch.zeros(shape, dtype=getattr(torch, dtype)))
            except Exception:  # the wrong size for this model: try the next
                continue
            return shape
    return None
