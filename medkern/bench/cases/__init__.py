"""The registry of benchmark cases, one module a kernel family.

Cases live here, inside the installed package, so ``medkern bench`` finds them wherever
medkern is installed; the repository's ``benchmarks/`` folder holds saved results and
explains how to add a case. To add a family: write ``<family>.py`` with a ``CASES`` tuple
and list it below.
"""

from __future__ import annotations

from ..case import Case
from . import bias_act, cnn, gan, models, rnn
from .models import custom_model_cases  # noqa: F401  (medkern bench --model)

_FAMILIES = (bias_act, cnn, rnn, gan, models)


def all_cases() -> tuple[Case, ...]:
    return tuple(case for family in _FAMILIES for case in family.CASES)


def select(substring: str | None = None) -> tuple[Case, ...]:
    """The cases whose name contains ``substring`` (all cases if None)."""
    return tuple(case for case in all_cases() if substring is None or substring in case.name)
