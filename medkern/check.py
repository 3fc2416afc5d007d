"""``medkern check``: every op, on every device and backend available here, against its reference.

Small shapes, every dtype and activation, a few layouts; forward, gradients and second-order
gradients, each judged by the tolerance table (medkern.tolerances). The first thing to run on a
new machine or GPU: a non-zero exit means a kernel disagrees with the reference here.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch

from . import activations, backend
from .testing import bias_act as bias_act_testing
from .testing import max_pool as max_pool_testing
from .testing import minibatch_stddev as minibatch_stddev_testing
from .testing import modules as modules_testing
from .testing import modulate_weight as modulate_weight_testing
from .testing import norm_act as norm_act_testing
from .testing import pixel_norm as pixel_norm_testing
from .testing import rnn as rnn_testing
from .testing import upfirdn2d as upfirdn2d_testing

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


def _judged(common: dict, outputs: Callable[[], list]) -> list[Result]:
    """One Result per (output name, worst error / allowed) that ``outputs()`` gives; if it raises,
    one failed Result that says what was raised (a crash is a failure to report, not to stop at)."""
    torch.manual_seed(0)
    try:
        rows = outputs()
    except Exception as exc:
        return [Result(**common, output="(run)", worst=None, ok=False, error=f"{type(exc).__name__}: {exc}")]
    return [Result(**common, output=name, worst=worst, ok=bool(worst <= 1.0)) for name, worst in rows]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_cases(op: str, device: str, backend_name: str, dtypes, cases, case_name: Callable[[object], str],
                 outputs: Callable[..., list]) -> list[Result]:
    """One op's Results: ``outputs(case, dtype, device, backend_name)`` judged for every dtype and case."""
    results = []
    for dtype, case in itertools.product(dtypes, cases):
        results += _judged(dict(op=op, device=device, backend=backend_name, dtype=_dtype_name(dtype),
                                case=case_name(case)), functools.partial(outputs, case, dtype, device, backend_name))
    return results


# bias_act: every activation in each layout, every other layout with alpha, gain and clamp set
BIAS_ACT_CASES = [
    (act, layout, index % 2)
    for act in activations.NAMES
    for index, layout in enumerate(layout for layout in bias_act_testing.LAYOUTS if layout.name in LAYOUT_NAMES)
]


def _bias_act_outputs(case, dtype, device, backend_name):
    act, layout, variant = case
    alpha, gain, clamp = bias_act_testing.options_for(act, variant)
    x, b = bias_act_testing.make_inputs(layout, dtype, device, act, alpha, gain, clamp)
    got = bias_act_testing.run(backend_name, x, b, layout.dim, act, alpha, gain, clamp)
    want = bias_act_testing.oracle(x, b, layout.dim, act, alpha, gain, clamp)
    return bias_act_testing.worst(got, want, dtype)


def _bias_act_name(case) -> str:
    act, layout, variant = case
    return f"{act} {layout.name}" + (" alpha/gain/clamp" if variant else "")


# norm_act: each kind in both layouts, with an activation of each saving mode (y kept: lrelu;
# y and sign: relu; x kept: silu), and BatchNorm in eval mode (running statistics used).
NORM_ACT_CASES = [
    (norm_act_testing.Case(layout, (2, 6, 3, 4), kind, 3 if kind == "group" else None, make), options)
    for layout, make in (("nchw", "contiguous"), ("channels_last", "channels_last"))
    for kind in ("batch", "instance", "group")
    for options in (norm_act_testing.Options("lrelu", 0.2), norm_act_testing.Options("relu"),
                    norm_act_testing.Options("silu"))
] + [(norm_act_testing.Case("nchw", (2, 6, 3, 4), "batch"), norm_act_testing.Options("relu", training=False))]


def _norm_act_outputs(case, dtype, device, backend_name):
    case, options = case
    inputs = norm_act_testing.make_inputs(case, dtype, device, options)
    got = norm_act_testing.run(backend_name, case, inputs, options)
    return norm_act_testing.worst(got, norm_act_testing.oracle(case, inputs, options), inputs)


def _rnn_outputs(case, dtype, device, backend_name):
    inputs = rnn_testing.make_inputs(case, dtype, device)
    with backend.use_backend(backend_name):
        got = rnn_testing.outputs_and_grads(case, inputs)
    cpu_inputs = {k: (tuple(t.cpu() for t in v) if isinstance(v, tuple) else v.cpu() if v is not None else None)
                  for k, v in inputs.items()}
    return rnn_testing.worst(got, rnn_testing.oracle(case, cpu_inputs, dtype), dtype)


def _upfirdn2d_outputs(case, dtype, device, backend_name):
    x, f = upfirdn2d_testing.make_inputs(case, dtype, device)
    got = upfirdn2d_testing.run(backend_name, x, f, case)
    return upfirdn2d_testing.worst(got, upfirdn2d_testing.oracle(x.cpu(), f.cpu(), case), dtype)


PIXEL_NORM_LAYOUTS = [layout for layout in pixel_norm_testing.LAYOUTS if layout.name in LAYOUT_NAMES + ("last_dim",)]


def _pixel_norm_outputs(layout, dtype, device, backend_name):
    x = pixel_norm_testing.make_inputs(layout, dtype, device)
    got = pixel_norm_testing.run(backend_name, x, layout.dim, 1e-8)
    return pixel_norm_testing.worst(got, pixel_norm_testing.oracle(x, layout.dim, 1e-8), dtype)


def _max_pool_outputs(case, dtype, device, backend_name):
    x = max_pool_testing.make_inputs(case, dtype, device)
    got = max_pool_testing.run(backend_name, case, x)
    positions_ok = torch.equal(max_pool_testing.argmax(backend_name, case, x).cpu(),
                               max_pool_testing.oracle_argmax(case, x))
    # the window positions are exact or wrong: 0 or infinitely many times the (zero) tolerance
    return max_pool_testing.worst(got, max_pool_testing.oracle(case, x), dtype) + [
        ("argmax", 0.0 if positions_ok else float("inf"))]


def _minibatch_stddev_outputs(case, dtype, device, backend_name):
    x = minibatch_stddev_testing.make_inputs(case, dtype, device)
    got = minibatch_stddev_testing.run(backend_name, case, x)
    return minibatch_stddev_testing.worst(got, minibatch_stddev_testing.oracle(case, x), dtype)


def _modulate_weight_outputs(case, dtype, device, backend_name):
    weight, styles = modulate_weight_testing.make_inputs(case, dtype, device)
    got = modulate_weight_testing.run(backend_name, case, weight, styles)
    return modulate_weight_testing.worst(got, modulate_weight_testing.oracle(case, weight, styles), dtype)


def _modules_outputs(case, dtype, device, backend_name):
    with backend.use_backend(backend_name):
        return modules_testing.outputs(case, dtype, device)


def _by_id(case) -> str:
    return case.id


def _checker(op: str, cases, case_name, outputs) -> Callable[..., list[Result]]:
    def check(device: str, backend_name: str, dtypes=DTYPES) -> list[Result]:
        return _check_cases(op, device, backend_name, dtypes, cases, case_name, outputs)

    check.__name__ = f"check_{op}"
    return check


# The ops ``medkern check`` covers, by op name (as medkern.backend knows them).
CHECKS: dict[str, Callable[..., list[Result]]] = {
    "bias_act": _checker("bias_act", BIAS_ACT_CASES, _bias_act_name, _bias_act_outputs),
    "norm_act": _checker("norm_act", NORM_ACT_CASES, lambda case: f"{case[0].id} {case[1].id}", _norm_act_outputs),
    "max_pool": _checker("max_pool", max_pool_testing.CASES, _by_id, _max_pool_outputs),
    "rnn_sequence": _checker("rnn_sequence", rnn_testing.CASES, _by_id, _rnn_outputs),
    "upfirdn2d": _checker("upfirdn2d", upfirdn2d_testing.CASES, lambda case: case.name, _upfirdn2d_outputs),
    "pixel_norm": _checker("pixel_norm", PIXEL_NORM_LAYOUTS, lambda layout: layout.name, _pixel_norm_outputs),
    "minibatch_stddev": _checker("minibatch_stddev", minibatch_stddev_testing.CASES, _by_id,
                                 _minibatch_stddev_outputs),
    "modulate_weight": _checker("modulate_weight", modulate_weight_testing.CASES, _by_id, _modulate_weight_outputs),
    # the drop-in modules, as medkern.swap puts them into torch models (medkern.verify's comparison)
    "modules": _checker("modules", modules_testing.CASES, _by_id, _modules_outputs),
}
# the op whose kernels decide whether a backend can run a check (the modules run conv_act/norm_act)
_KERNELS_OF = {"modules": "norm_act"}


def run_check(devices=None, backends=None, dtypes=DTYPES, ops: Optional[Iterable[str]] = None):
    """(results, skipped (op, device, backend, reason))."""
    results, skipped = [], []
    for op in ops or CHECKS:
        runnable, not_here = targets(devices, backends, _KERNELS_OF.get(op, op))
        skipped += [(op, *entry) for entry in not_here]
        for device, name in runnable:
            results += CHECKS[op](device, name, dtypes)
    return results, skipped


def summary(results: list[Result], skipped) -> str:
    """A table per (op, device, backend, dtype): runs, worst error / allowed, PASS or FAIL; then failures."""
    lines = [f"{'op':<12} {'device':<6} {'backend':<9} {'dtype':<9} {'checks':>6} {'worst/allowed':>13}  result"]
    groups = {}
    for r in results:
        groups.setdefault((r.op, r.device, r.backend, r.dtype), []).append(r)
    for (op, device, name, dtype), rows in groups.items():
        worst = max((r.worst for r in rows if r.worst is not None), default=0.0)
        verdict = "PASS" if all(r.ok for r in rows) else "FAIL"
        lines.append(f"{op:<12} {device:<6} {name:<9} {dtype:<9} {len(rows):>6} {worst:>13.3g}  {verdict}")
    for op, device, name, reason in skipped:
        lines.append(f"(not run: {op} with the {name} backend on {device}: {reason})")
    failures = [r for r in results if not r.ok]
    if failures:
        lines.append(f"\n{len(failures)} FAILED:")
        for r in failures[:50]:
            detail = r.error or f"error {r.worst:.3g}x the tolerance"
            lines.append(f"  {r.op} {r.device} {r.backend} {r.dtype} {r.case}: {r.output}: {detail}")
    else:
        lines.append(f"\nall {len(results)} checks passed")
    return "\n".join(lines)
