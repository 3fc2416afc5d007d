"""Functional patterns of a traced forward, for swap: an activation applied to

    F.conv1d/2d/3d(x, weight, bias, stride, padding, dilation, groups)    -> medkern.ops.conv_act
    F.linear(x, weight, bias)                                             -> linear + bias_act
    F.batch_norm / F.instance_norm / F.group_norm(x, ...)                 -> medkern.ops.norm_act

with the tensors (weight, bias, running statistics) any values of the graph: parameters read as
``self.weight``, or computed ones (a weight-standardized kernel). The call's other arguments must
be constants of the trace; a call with a traced stride or eps, or one whose medkern twin would not
do exactly what torch does (a batch norm with neither batch nor running statistics, which torch
refuses), is left and reported.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import ops
from ..reference.activations import activation_as_given
from .patterns import Unsupported

_P = inspect.Parameter


def _signature(*names_and_defaults) -> inspect.Signature:
    return inspect.Signature([_P(name, _P.POSITIONAL_OR_KEYWORD, **({"default": d[0]} if d else {}))
                              for name, *d in names_and_defaults])


# the builtins have no Python signature: theirs as torch documents them
_CONV = _signature(("input",), ("weight",), ("bias", None), ("stride", 1), ("padding", 0), ("dilation", 1),
                   ("groups", 1))
_LINEAR = _signature(("input",), ("weight",), ("bias", None))
_CONVS = (F.conv1d, F.conv2d, F.conv3d)  # torch.convNd themselves
_LINEARS = (F.linear,)  # torch._C._nn.linear itself
_NORMS = {F.batch_norm: "batch", F.instance_norm: "instance", F.group_norm: "group"}


@dataclass(frozen=True)
class FunctionalCall:
    """A matched producer or norm call: the medkern block it becomes, its tensor arguments after x
    (fx nodes or None, in the order the fused call takes them) and its constant arguments."""

    block: str  # "ConvAct", "LinearAct" or "NormAct", as the module patterns report them
    x: fx.Node
    tensors: tuple
    constants: dict


def _bind(signature: inspect.Signature, node: fx.Node) -> Optional[dict]:
    try:
        bound = signature.bind(*node.args, **node.kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def _constant_arguments(name: str, arguments: dict, tensors: tuple[str, ...]) -> Union[dict, Unsupported]:
    """The non-tensor arguments, if all are constants of the trace."""
    constants = {k: v for k, v in arguments.items() if k != "input" and k not in tensors}
    traced = [k for k, v in constants.items() if isinstance(v, fx.Node)
              or (isinstance(v, (tuple, list)) and any(isinstance(i, fx.Node) for i in v))]
    if traced:
        return Unsupported(f"{name} with a traced (not constant) {traced[0]}")
    untraced = [k for k in tensors if arguments[k] is not None and not isinstance(arguments[k], fx.Node)]
    if untraced:
        return Unsupported(f"{name} with a constant {untraced[0]} that is not a tensor of the graph")
    return constants


def _bound_arguments_of(node: fx.Node) -> Optional[dict]:
    try:
        return _bind(inspect.signature(node.target), node)
    except (TypeError, ValueError):
        return None


def _norm_call(kind: str, node: fx.Node) -> Union[FunctionalCall, Unsupported]:
    name = node.target.__name__
    arguments = _bound_arguments_of(node)
    if arguments is None:
        return Unsupported(f"{name} with arguments medkern cannot read")
    stats = () if kind == "group" else ("running_mean", "running_var")
    if not isinstance(arguments["input"], fx.Node):
        return None
    constants = _constant_arguments(name, arguments, ("weight", "bias") + stats)
    if isinstance(constants, Unsupported):
        return constants
    affine = (arguments["weight"], arguments["bias"])
    if kind == "group":
        return FunctionalCall("NormAct", arguments["input"], affine + (None, None),
                              {"kind": kind, "batch_stats": True, "momentum": 0.0, "eps": constants["eps"],
                               "num_groups": constants["num_groups"]})
    running = (arguments["running_mean"], arguments["running_var"])
    batch_stats = constants["training" if kind == "batch" else "use_input_stats"]
    momentum = constants["momentum"]
    if not isinstance(batch_stats, bool):
        return Unsupported(f"{name} with a non-bool training flag {batch_stats!r}")
    if (running[0] is None) != (running[1] is None):
        return Unsupported(f"{name} with only one of running_mean and running_var")
    if not batch_stats and running[0] is None:
        return Unsupported(f"{name} with neither batch nor running statistics (torch refuses it)")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not math.isfinite(momentum):
        return Unsupported(f"{name} with momentum={momentum!r}")
    return FunctionalCall("NormAct", arguments["input"], affine + running,
                          {"kind": kind, "batch_stats": batch_stats, "momentum": float(momentum),
                           "eps": constants["eps"], "num_groups": None})


def _call_of(block: str, name: str, signature: inspect.Signature, node: fx.Node, tensors: tuple[str, ...]):
    """A producer call (conv or linear): FunctionalCall, Unsupported, or None if x is not a graph value."""
    arguments = _bind(signature, node)
    if arguments is None:
        return Unsupported(f"{name} with arguments medkern cannot read")
    if not isinstance(arguments["input"], fx.Node):
        return None
    constants = _constant_arguments(name, arguments, tensors)
    if isinstance(constants, Unsupported):
        return constants
    return FunctionalCall(block, arguments["input"], tuple(arguments[t] for t in tensors), constants)


def match_functional(node: fx.Node) -> Union[FunctionalCall, Unsupported, None]:
    """What a call_function node is: a functional conv, linear or norm medkern can run (FunctionalCall),
    one it cannot run exactly (Unsupported, with why), or neither (None)."""
    if node.op != "call_function":
        return None
    target = node.target
    if target in _CONVS:
        return _call_of("ConvAct", target.__name__, _CONV, node, ("weight", "bias"))
    if target in _LINEARS:
        return _call_of("LinearAct", "linear", _LINEAR, node, ("weight", "bias"))
    if target in _NORMS:
        return _norm_call(_NORMS[target], node)
    return None


class FunctionalConvAct(nn.Module):
    """``act(F.convNd(x, weight, bias, ...))`` as one medkern.ops.conv_act call."""

    def __init__(self, stride, padding, dilation, groups, act: str, alpha: Optional[float]):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.act, self.alpha = act, alpha

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return ops.conv_act(x, weight, bias, self.stride, self.padding, self.dilation, self.groups, self.act,
                            self.alpha)


class FunctionalLinearAct(nn.Module):
    """``act(F.linear(x, weight, bias))``: the bias and the activation as one bias_act pass."""

    def __init__(self, act: str, alpha: Optional[float]):
        super().__init__()
        self.act, self.alpha = act, alpha

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        if bias is not None and bias.shape != weight.shape[:1]:  # F.linear broadcasts e.g. a (1,) bias
            return activation_as_given(F.linear(x, weight, bias), self.act, self.alpha)
        return ops.bias_act(F.linear(x, weight), bias, -1, self.act, self.alpha)


class FunctionalNormAct(nn.Module):
    """``act(F.<kind>_norm(x, ...))`` as one medkern.ops.norm_act call."""

    def __init__(self, kind: str, batch_stats: bool, momentum: float, eps: float, num_groups: Optional[int],
                 act: str, alpha: Optional[float], memory_saving: bool):
        super().__init__()
        self.kind, self.batch_stats, self.momentum, self.eps = kind, batch_stats, momentum, eps
        self.num_groups, self.act, self.alpha, self.memory_saving = num_groups, act, alpha, memory_saving

    def forward(self, x, weight, bias, running_mean, running_var) -> torch.Tensor:
        return ops.norm_act(x, self.kind, weight, bias, running_mean, running_var, self.batch_stats, self.momentum,
                            self.eps, self.act, self.alpha, self.num_groups, self.memory_saving)


def fused_call(call: FunctionalCall, act: str, alpha: Optional[float], memory_saving: bool) -> nn.Module:
    """The module the rewritten graph calls with (x, *call.tensors)."""
    c = call.constants
    if call.block == "ConvAct":
        return FunctionalConvAct(c["stride"], c["padding"], c["dilation"], c["groups"], act, alpha)
    if call.block == "LinearAct":
        return FunctionalLinearAct(act, alpha)
    return FunctionalNormAct(c["kind"], c["batch_stats"], c["momentum"], c["eps"], c["num_groups"], act, alpha,
                             memory_saving)
