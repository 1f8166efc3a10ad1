"""A TorchScript source as a chain of eager layers: what structured pruning and derived students work on.

Only Sequential-style models qualify: the forward runs the leaf layers in registration order, each on the
previous one's output (nested `nn.Sequential`s, or a module calling them in order, like examples/digits).
That is proven, not assumed: the rebuilt chain must reproduce the source's outputs on calibration inputs.
Anything else (skip connections, attention, functional calls such as `torch.relu(x)` inside `forward`) is
refused with `NotApplicable`: pruning those needs a graph pass (torch.fx) that tracks every consumer of
every channel, which slimserve does not have. ExportedPrograms (`.pt2`) and ONNX sources are refused too.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from optimizer import export
from optimizer.errors import NotApplicable
from optimizer.signature import check_signature
from optimizer.spec import Spec

# what a chain may hold: layers with weights, and layers that keep the channel axis as it is
WEIGHTED = ("Conv2d", "Linear")
NORMS = ("BatchNorm1d", "BatchNorm2d")
PASS_THROUGH = (
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "GELU",
    "SiLU",
    "Tanh",
    "Sigmoid",
    "Hardswish",
    "Dropout",
    "Identity",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "Flatten",
)


def load_chain(spec: Spec, sample: np.ndarray) -> nn.Sequential:
    """The source as an eager `nn.Sequential` of copied layers, checked against the source on `sample`."""
    if spec.source.kind != "torchscript":
        raise NotApplicable(f"needs a TorchScript (.pt) source of Sequential-style layers; this one is {spec.source.kind}")
    if len(spec.inputs) != 1:
        raise NotApplicable("needs a model with one input")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13 marks torch.jit.load deprecated
        source = torch.jit.load(str(spec.source.path), map_location="cpu").eval()
    layers = []
    for name, module in source.named_modules():
        children = list(module.children())
        if children:
            if list(module.named_parameters(recurse=False)):
                raise NotApplicable(f"{name or 'the top module'} holds parameters of its own beside its layers")
            continue
        layers.append(_copy(name, module))
    chain = nn.Sequential(*layers).eval()
    _check_same(source, chain, sample)
    return chain


def _copy(name: str, layer) -> nn.Module:
    kind = getattr(layer, "original_name", type(layer).__name__)
    if kind == "Conv2d":
        if layer.groups != 1:
            raise NotApplicable(f"layer {name} is a grouped Conv2d (groups={layer.groups}); pruning keeps groups=1 only")
        new = nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            tuple(layer.kernel_size),
            tuple(layer.stride),
            tuple(layer.padding) if not isinstance(layer.padding, str) else layer.padding,
            tuple(layer.dilation),
            1,
            layer.bias is not None,
            layer.padding_mode,
        )
    elif kind == "Linear":
        new = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    elif kind in NORMS:
        new = getattr(nn, kind)(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
    elif kind in PASS_THROUGH:
        new = _copy_pass_through(kind, layer)
    else:
        raise NotApplicable(
            f"layer {name} is a {kind}; Sequential chains of {', '.join(WEIGHTED + NORMS)} and elementwise/pooling layers are supported"
        )
    new.load_state_dict({k: v.detach().clone() for k, v in layer.state_dict().items()})
    return new


def _copy_pass_through(kind: str, layer) -> nn.Module:
    cls = getattr(nn, kind)
    if kind == "LeakyReLU":
        return cls(layer.negative_slope)
    if kind == "GELU":
        return cls(approximate=layer.approximate)
    if kind == "Dropout":
        return cls(layer.p)
    if kind == "Flatten":
        return cls(layer.start_dim, layer.end_dim)
    if kind == "MaxPool2d":
        return cls(layer.kernel_size, layer.stride, layer.padding, layer.dilation, ceil_mode=layer.ceil_mode)
    if kind == "AvgPool2d":
        return cls(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode, layer.count_include_pad)
    if kind == "AdaptiveAvgPool2d":
        return cls(layer.output_size)
    return cls()


def _check_same(source, chain: nn.Sequential, sample: np.ndarray) -> None:
    x = torch.from_numpy(np.ascontiguousarray(sample[:16]))
    with torch.no_grad():
        want = source(x)
        try:
            got = chain(x)
        except RuntimeError as exc:
            raise NotApplicable(f"its forward is not its layers run in order ({_first_line(exc)})") from None
    if not isinstance(want, torch.Tensor) or got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise NotApplicable("its forward is not its layers run in order (functional calls or branches in forward?)")


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export_module(module: nn.Module, spec: Spec, dst: Path) -> Path:
    """The same export as the fp32 reference, then the same signature check."""
    export.export_module(module, spec, dst)
    check_signature(dst, spec)
    return dst


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__
