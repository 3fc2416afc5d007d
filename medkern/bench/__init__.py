"""The benchmark harness behind ``medkern bench``.

case.py     what a case is: inputs, reference, fused op, targets; the contenders built from them
cases/      the registered cases, one module a kernel family
timing.py   interleaved warm-up-then-median timing (wall clock on CPU, CUDA events on GPU)
memory.py   bytes saved for backward; peak allocated on CUDA
suite.py    running cases into JSON-ready results
report.py   results.json, results.md and the printed table; chart.py draws results.png
"""

from .case import Case, Target
from .cases import all_cases, select
from .suite import Settings, run_suite

__all__ = ["Case", "Settings", "Target", "all_cases", "run_suite", "select"]
