"""The activations medkern fuses, their names, ids and default parameters.

This is the Python side of the one activation table. The kernels hold the math:
``csrc/common/activations.h`` (C++ CPU and CUDA) and ``medkern/triton/activations.py``
(Triton); ``medkern/reference/activations.py`` states it in plain PyTorch. The ids below
are the ones the Triton kernels take, in the order of the C++ ``Act`` enum; a test checks
that every implementation accepts every name here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

# SELU's fixed constants (Klambauer et al., 2017), as torch.nn.SELU uses them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# softplus is linear above this input, as torch.nn.functional.softplus(threshold=20).
SOFTPLUS_THRESHOLD = 20.0


@dataclass(frozen=True)
class Activation:
    name: str
    id: int
    default_alpha: Optional[float] = None  # None: the activation takes no alpha

    @property
    def takes_alpha(self) -> bool:
        return self.default_alpha is not None


_TABLE = [
    Activation("linear", 0),
    Activation("relu", 1),
    Activation("lrelu", 2, default_alpha=0.01),  # torch.nn.LeakyReLU's negative_slope
    Activation("tanh", 3),
    Activation("sigmoid", 4),
    Activation("elu", 5, default_alpha=1.0),  # torch.nn.ELU's alpha
    Activation("selu", 6),
    Activation("softplus", 7),
    Activation("silu", 8),
    Activation("gelu", 9),  # the exact erf form, torch's approximate="none"
]

ACTIVATIONS = {a.name: a for a in _TABLE}
ALIASES = {"swish": "silu", "leaky_relu": "lrelu", "identity": "linear", "none": "linear"}
NAMES = tuple(ACTIVATIONS)


def get(name: str, op: str = "medkern") -> Activation:
    """The activation called ``name`` (or one of its aliases); ValueError naming ``op`` if none."""
    if not isinstance(name, str):
        raise TypeError(f"{op}: act must be a string naming an activation, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ACTIVATIONS:
        raise ValueError(
            f"{op}: unknown activation act={name!r}; expected one of {', '.join(NAMES)} "
            f"(aliases: {', '.join(ALIASES)})"
        )
    return ACTIVATIONS[key]


def resolve_alpha(act: Activation, alpha, op: str = "medkern") -> float:
    """The alpha the kernels use: the default where none is given; an error where ``act`` has none."""
    if alpha is None:
        return act.default_alpha if act.takes_alpha else 0.0
    if not act.takes_alpha:
        raise ValueError(f"{op}: act={act.name!r} takes no alpha, got alpha={alpha!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"{op}: alpha must be a real number, got {type(alpha).__name__}")
    if not math.isfinite(alpha):
        raise ValueError(f"{op}: alpha must be finite, got {alpha}")
    return float(alpha)
