"""torch activation modules <-> medkern activation names: what from_torch and to_torch map."""

from __future__ import annotations

from typing import Optional

from torch import nn

from .. import activations


def act_from_module(module: Optional[nn.Module], owner: str) -> tuple[str, Optional[float]]:
    """(medkern activation name, alpha) computing exactly what ``module`` computes.

    None and nn.Identity are "linear". Anything medkern cannot compute exactly (e.g. GELU's tanh
    approximation, a Softplus with another beta) raises a ValueError naming ``owner``.
    """
    # exact types: a subclass may override forward (e.g. a LeakyReLU scaled by sqrt(2))
    kind = type(module)
    if module is None or kind is nn.Identity:
        return "linear", None
    if kind is nn.LeakyReLU:
        return "lrelu", float(module.negative_slope)
    if kind is nn.ELU:
        return "elu", float(module.alpha)
    if kind is nn.GELU:
        if module.approximate == "none":
            return "gelu", None
    elif kind is nn.Softplus:
        if module.beta == 1 and module.threshold == activations.SOFTPLUS_THRESHOLD:
            return "softplus", None
    else:
        simple = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SELU: "selu", nn.SiLU: "silu"}
        if kind in simple:
            return simple[kind], None
    raise ValueError(f"{owner}: no medkern activation computes {module!r} exactly")


def module_from_act(act: str, alpha: Optional[float]) -> nn.Module:
    """The torch module computing medkern's ``act`` with ``alpha`` (resolved to its default)."""
    spec = activations.get(act)
    alpha = activations.resolve_alpha(spec, alpha)
    return {
        "linear": lambda: nn.Identity(),
        "relu": lambda: nn.ReLU(),
        "lrelu": lambda: nn.LeakyReLU(alpha),
        "tanh": lambda: nn.Tanh(),
        "sigmoid": lambda: nn.Sigmoid(),
        "elu": lambda: nn.ELU(alpha),
        "selu": lambda: nn.SELU(),
        "softplus": lambda: nn.Softplus(),
        "silu": lambda: nn.SiLU(),
        "gelu": lambda: nn.GELU(),
    }[spec.name]()
