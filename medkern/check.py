"""``medkern check``: every op, on every device and backend available here, against its reference.

Small shapes, every dtype and activation, a few layouts; forward, gradients and second-order
gradients, each judged by the tolerance table (medkern.tolerances). The first thing to run on a
new machine or GPU: a non-zero exit means a kernel disagrees with the reference here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from . import activations, backend, tolerances
from .testing import bias_act as bias_act_testing

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
BACKENDS_BY_DEVICE = {"cpu": ("cpu", "triton"), "cuda": ("cuda", "triton")}
LAYOUT_NAMES = ("nchw", "channels_last", "rank1", "sliced")


@dataclass(frozen=True)
class Result:
    op: str
    device: str
    backend: str
    dtype: str
    case: str
    output: str
    worst: Optional[float]  # largest error / allowed error; None if the run raised
    ok: bool
    error: Optional[str] = None


def targets(devices: Optional[Iterable[str]] = None, backends: Optional[Iterable[str]] = None, op="bias_act"):
    """(device, backend) pairs that can run ``op`` here, and (device, backend, reason) for those that cannot."""
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    runnable, skipped = [], []
    for device in devices:
        for name in BACKENDS_BY_DEVICE[device]:
            if backends is not None and name not in backends:
                continue
            reason = backend._why_not(name, op, torch.device(device))
            (skipped if reason else runnable).append((device, name, reason) if reason else (device, name))
    return runnable, skipped


def check_bias_act(device: str, backend_name: str, dtypes=DTYPES) -> list[Result]:
    layouts = [layout for layout in bias_act_testing.LAYOUTS if layout.name in LAYOUT_NAMES]
    results = []
    for dtype, act, layout in itertools.product(dtypes, activations.NAMES, layouts):
        variant = layouts.index(layout) % 2
        alpha, gain, clamp = bias_act_testing.options_for(act, variant)
        case = f"{act} {layout.name}" + (" alpha/gain/clamp" if variant else "")
        common = dict(op="bias_act", device=device, backend=backend_name, dtype=str(dtype).removeprefix("torch."),
                      case=case)
        torch.manual_seed(0)
        try:
            x, b = bias_act_testing.make_inputs(layout, dtype, device, act, alpha, gain, clamp)
            got = bias_act_testing.run(backend_name, x, b, layout.dim, act, alpha, gain, clamp)
            want = bias_act_testing.oracle(x, b, layout.dim, act, alpha, gain, clamp)
        except Exception as exc:  # a crash is a failure to report, not to stop at
            results.append(Result(**common, output="(run)", worst=None, ok=False, error=f"{type(exc).__name__}: {exc}"))
            continue
        for (name, kind), actual, expected in zip(bias_act_testing.OUTPUTS, got, want):
            worst, ok = tolerances.within(actual.cpu(), bias_act_testing.rounded(expected, dtype), "bias_act", kind, dtype)
            results.append(Result(**common, output=name, worst=worst, ok=ok))
    return results


def run_check(devices=None, backends=None, dtypes=DTYPES):
    """(results, skipped targets with reasons)."""
    runnable, skipped = targets(devices, backends)
    results = []
    for device, name in runnable:
        results += check_bias_act(device, name, dtypes)
    return results, skipped


def summary(results: list[Result], skipped) -> str:
    """A table per (op, device, backend, dtype): runs, worst error / allowed, PASS or FAIL; then failures."""
    lines = [f"{'op':<10} {'device':<6} {'backend':<9} {'dtype':<9} {'checks':>6} {'worst/allowed':>13}  result"]
    groups = {}
    for r in results:
        groups.setdefault((r.op, r.device, r.backend, r.dtype), []).append(r)
    for (op, device, name, dtype), rows in groups.items():
        worst = max((r.worst for r in rows if r.worst is not None), default=0.0)
        verdict = "PASS" if all(r.ok for r in rows) else "FAIL"
        lines.append(f"{op:<10} {device:<6} {name:<9} {dtype:<9} {len(rows):>6} {worst:>13.3g}  {verdict}")
    for device, name, reason in skipped:
        lines.append(f"(not run: {name} on {device}: {reason})")
    failures = [r for r in results if not r.ok]
    if failures:
        lines.append(f"\n{len(failures)} FAILED:")
        for r in failures[:50]:
            detail = r.error or f"error {r.worst:.3g}x the tolerance"
            lines.append(f"  {r.op} {r.device} {r.backend} {r.dtype} {r.case}: {r.output}: {detail}")
    else:
        lines.append(f"\nall {len(results)} checks passed")
    return "\n".join(lines)
