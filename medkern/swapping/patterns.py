"""What each node of a traced forward is, for swap: a producer (conv, conv-transpose, linear),
a norm, an activation (module or functional call), a no-op (Identity, Dropout(p=0)), or other.

An activation is matched only where medkern computes exactly the same function; anything
activation-like that it does not (PReLU, GELU's tanh form, a Softplus with another beta, ...)
is named with the reason, so the report can say why it was left.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import fx, nn

from .. import activations
from ..nn.activation_modules import act_from_module
from ..nn.conv_act import CONV_TRANSPOSES, CONVS
from ..nn.norm_act import NORMS

@dataclass(frozen=True)
class Act:
    """A matched activation: medkern's name and alpha (None: the default or none)."""

    name: str
    alpha: Optional[float] = None


@dataclass(frozen=True)
class Unsupported:
    """An activation medkern does not compute exactly, and why."""

    reason: str


# functional activations: target -> (medkern name, parameter giving alpha or None, {parameter: required value})
_FUNCTIONAL = {
    F.relu: ("relu", None, {}), torch.relu: ("relu", None, {}), torch.relu_: ("relu", None, {}),
    F.leaky_relu: ("lrelu", "negative_slope", {}),
    F.elu: ("elu", "alpha", {}),
    F.selu: ("selu", None, {}), torch.selu: ("selu", None, {}),
    F.silu: ("silu", None, {}),
    F.gelu: ("gelu", None, {"approximate": "none"}),
    F.softplus: ("softplus", None, {"beta": 1, "threshold": activations.SOFTPLUS_THRESHOLD}),
    torch.tanh: ("tanh", None, {}), F.tanh: ("tanh", None, {}),
    torch.sigmoid: ("sigmoid", None, {}), F.sigmoid: ("sigmoid", None, {}),
}
# Tensor methods: x.relu(), x.relu_(), ... (no parameters)
_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh", "sigmoid": "sigmoid",
            "sigmoid_": "sigmoid"}


# builtins without a Python signature: their parameters and defaults, as torch documents them
_BUILTIN_SIGNATURES = {
    F.softplus: inspect.Signature([inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                                   inspect.Parameter("beta", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=1.0),
                                   inspect.Parameter("threshold", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     default=activations.SOFTPLUS_THRESHOLD)]),
    F.gelu: inspect.Signature([inspect.Parameter("input", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                               inspect.Parameter("approximate", inspect.Parameter.KEYWORD_ONLY, default="none")]),
}


def _bound_arguments(fn, args: tuple, kwargs: dict) -> Optional[dict]:
    """fn's parameters bound to a call's arguments (defaults applied), or None if unknown."""
    try:
        signature = _BUILTIN_SIGNATURES.get(fn) or inspect.signature(fn)
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    bound.apply_defaults()
    return dict(bound.arguments)


def _functional_act(node: fx.Node) -> Union[Act, Unsupported, None]:
    if node.op == "call_method":
        name = _METHODS.get(node.target)
        if name is None:
            return None
        return Act(name) if len(node.args) == 1 and not node.kwargs else Unsupported(f"{node.target} with arguments")
    entry = _FUNCTIONAL.get(node.target)
    if entry is None:
        return None
    name, alpha_parameter, required = entry
    arguments = _bound_arguments(node.target, node.args, node.kwargs)
    if arguments is None:
        if len(node.args) == 1 and not node.kwargs and alpha_parameter is None and not required:
            return Act(name)  # a builtin such as torch.relu(x)
        return Unsupported(f"{node.target.__name__} with arguments medkern cannot read")
    others = [v for k, v in arguments.items() if k not in ("input", "self", "inplace")]
    if any(isinstance(v, fx.Node) for v in others):
        return Unsupported(f"{node.target.__name__} with a traced (not constant) parameter")
    for key, value in required.items():
        if arguments.get(key, value) != value:
            return Unsupported(f"{node.target.__name__} with {key}={arguments[key]!r}: medkern computes {key}={value!r}")
    alpha = arguments.get(alpha_parameter) if alpha_parameter else None
    return Act(name, None if alpha is None else float(alpha))


def module_act(module: nn.Module) -> Union[Act, Unsupported, None]:
    """The activation a module computes: Act, Unsupported (an activation medkern lacks), or None."""
    if type(module) is nn.Identity:
        return None
    try:
        name, alpha = act_from_module(module, "medkern.swap")
    except ValueError:
        if isinstance(module, nn.Module) and any(cls.__module__ == "torch.nn.modules.activation"
                                                 for cls in type(module).__mro__):
            return Unsupported(f"{type(module).__name__}: no medkern activation computes it exactly")
        return None
    return Act(name, alpha)


def is_no_op(module: nn.Module) -> bool:
    """Modules that return their input unchanged in every mode: skipped inside a pattern."""
    return type(module) is nn.Identity or (
        type(module) in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout) and module.p == 0)


def has_hooks(module: nn.Module) -> bool:
    """Hooks run around a module's own call; a fused pattern does not call it, so it is left alone."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def producer_kind(module: nn.Module) -> Optional[str]:
    if type(module) in CONVS:
        return "conv"
    if type(module) in CONV_TRANSPOSES:
        return "conv_transpose"
    if type(module) is nn.Linear:
        return "linear"
    return None


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORMS) and type(module).__module__.startswith("torch.nn.")


def node_act(node: fx.Node, modules: dict) -> Union[Act, Unsupported, None]:
    """The activation a node applies to its first argument, if it is one."""
    if node.op == "call_module":
        return module_act(modules[node.target])
    if node.op in ("call_function", "call_method"):
        return _functional_act(node)
    return None


# torch modules whose output is a new tensor computed from their input, never a view of it or the
# input itself, and which never write to it
_NON_ALIASING = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
                 nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                 nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample)


def consumes_without_aliasing(node: fx.Node, modules: dict) -> bool:
    """node is a torch module call that reads its input and returns a new tensor: a fused block
    feeding only such calls may keep its output for backward (nothing can overwrite it)."""
    if node.op != "call_module":
        return False
    module = modules[node.target]
    if not type(module).__module__.startswith("torch.nn.") or getattr(module, "inplace", False):
        return False
    return isinstance(module, _NON_ALIASING) or type(module).__module__ == "torch.nn.modules.activation"
