"""Structured pruning: remove whole output channels / neurons, so the tensors themselves get smaller.

In every Conv2d and Linear but the last, the output channels with the smallest L1 norm of their weights
go (Li et al., "Pruning Filters for Efficient ConvNets", 2017), the same fraction per layer; what reads
them is cut to match: the next layer's input channels, a BatchNorm's statistics, and across a Flatten the
next Linear's `channels × positions` input columns. A short fine-tune toward the fp32 teacher follows
(optimizer/finetune.py). Works on Sequential-style chains only (optimizer/chain.py says why).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from optimizer.chain import NORMS
from optimizer.errors import NotApplicable


def prune_chain(chain: nn.Sequential, fraction: float) -> nn.Sequential:
    """A pruned copy of `chain`: each hidden Conv2d/Linear keeps `1 - fraction` of its outputs (at least 1)."""
    return _rebuild(chain, lambda layer: _l1_keep(layer, fraction))


def narrow_chain(chain: nn.Sequential, width: float, seed: int = 0) -> nn.Sequential:
    """The same layers with `width` of every hidden layer's outputs, freshly initialised: a derived student."""
    student = _rebuild(chain, lambda layer: torch.arange(_kept(_outputs(layer), 1 - width)))
    torch.manual_seed(seed)
    for layer in student:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return student


def _outputs(layer: nn.Module) -> int:
    return layer.weight.shape[0]


def _kept(count: int, fraction: float) -> int:
    return max(1, round(count * (1 - fraction)))


def _l1_keep(layer: nn.Module, fraction: float) -> torch.Tensor:
    scores = layer.weight.detach().abs().reshape(_outputs(layer), -1).sum(dim=1)
    keep = torch.topk(scores, _kept(_outputs(layer), fraction)).indices
    return torch.sort(keep).values  # original order: the next layer's columns stay aligned


def _rebuild(chain: nn.Sequential, choose) -> nn.Sequential:
    layers = [copy.deepcopy(layer) for layer in chain]
    weighted = [i for i, layer in enumerate(layers) if isinstance(layer, (nn.Conv2d, nn.Linear))]
    if len(weighted) < 2:
        raise NotApplicable("has fewer than two Conv2d/Linear layers: nothing between input and output to prune")
    for index in weighted[:-1]:  # the last layer's outputs are the model's outputs
        keep = choose(layers[index])
        original = _outputs(layers[index])
        layers[index] = _select_outputs(layers[index], keep)
        _fix_readers(layers, index, keep, original)
    return nn.Sequential(*layers).eval()


def _fix_readers(layers: list[nn.Module], start: int, keep: torch.Tensor, channels: int) -> None:
    """Cut what consumes layer `start`'s outputs (`channels` of them before), up to the next weighted layer."""
    spatial = isinstance(layers[start], nn.Conv2d)
    flattened = False
    norms = tuple(getattr(nn, name) for name in NORMS)
    for index in range(start + 1, len(layers)):
        layer = layers[index]
        if isinstance(layer, norms):
            layers[index] = _select_norm(layer, keep)
        elif isinstance(layer, nn.Flatten):
            flattened = spatial
        elif isinstance(layer, nn.Conv2d):
            layers[index] = _select_inputs(layer, keep)
            return
        elif isinstance(layer, nn.Linear):
            if spatial and not flattened:
                raise NotApplicable(f"a Linear reads Conv2d outputs without a Flatten between (layer {index})")
            layers[index] = _select_inputs(layer, _expand(keep, layer.in_features, channels) if flattened else keep)
            return


def _expand(keep: torch.Tensor, in_features: int, channels: int) -> torch.Tensor:
    """Channel indices -> the columns a Linear sees after Flatten of NCHW: channel c owns [c·P, (c+1)·P)."""
    if in_features % channels:
        raise NotApplicable(f"a Linear of {in_features} inputs cannot follow a Flatten of {channels} channels")
    positions = in_features // channels
    return (keep[:, None] * positions + torch.arange(positions)[None, :]).reshape(-1)


def _select_outputs(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = _resized(layer, inputs=None, outputs=len(keep))
    with torch.no_grad():
        new.weight.copy_(layer.weight[keep])
        if layer.bias is not None:
            new.bias.copy_(layer.bias[keep])
    return new


def _select_inputs(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = _resized(layer, inputs=len(keep), outputs=None)
    with torch.no_grad():
        new.weight.copy_(layer.weight[:, keep])
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new


def _resized(layer: nn.Module, inputs: int | None, outputs: int | None) -> nn.Module:
    """An empty layer like `layer` with `inputs` in-channels/features and `outputs` out (None: as it has)."""
    if isinstance(layer, nn.Conv2d):
        return nn.Conv2d(
            layer.in_channels if inputs is None else inputs,
            layer.out_channels if outputs is None else outputs,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            1,
            layer.bias is not None,
            layer.padding_mode,
        )
    features = (layer.in_features if inputs is None else inputs, layer.out_features if outputs is None else outputs)
    return nn.Linear(*features, layer.bias is not None)


def _select_norm(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = type(layer)(len(keep), layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
    new.load_state_dict({k: (v[keep] if v.dim() == 1 else v) for k, v in layer.state_dict().items()})
    return new
