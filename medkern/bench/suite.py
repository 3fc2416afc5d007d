"""Running cases: forward and forward+backward times, ratios, memory, targets, as JSON-ready dicts.

Modes:
- ``fwd``: the forward alone, under ``torch.no_grad()`` (inference: nothing is saved);
- ``fwd_bwd``: the forward with grad, then ``torch.autograd.grad`` of it w.r.t. every input
  that requires grad with a fixed upstream gradient laid out like the output. Gradients are
  returned rather than accumulated into ``.grad``, so no call pays for an extra addition.
"""

from __future__ import annotations

import functools
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .. import tolerances
from . import contention
from .case import COMPILE, EAGER, Case, is_medkern
from .memory import peak_allocated_bytes, saved_tensor_bytes
from .progress import Progress
from .timing import Timing, time_interleaved

FWD, FWD_BWD = "fwd", "fwd_bwd"
MODE_LABELS = {FWD: "fwd", FWD_BWD: "fwd+bwd"}
CLONE = "clone"  # the copy-bandwidth yardstick, timed with the forwards
SEED = 0


@dataclass(frozen=True)
class Settings:
    device: torch.device
    dtype: torch.dtype = torch.float32
    quick: bool = False
    repeats: Optional[int] = None  # timed rounds; None: 5 quick, 20 full
    warmup: Optional[int] = None  # untimed rounds after the first call; None: 1 quick, 3 full

    @property
    def timed_rounds(self) -> int:
        return self.repeats if self.repeats is not None else (5 if self.quick else 20)

    @property
    def warmup_rounds(self) -> int:
        return self.warmup if self.warmup is not None else (1 if self.quick else 3)


def run_suite(cases: tuple[Case, ...], settings: Settings, progress: Progress) -> list[dict]:
    """Results of every case; a case that fails is reported with its error, not raised."""
    results = []
    for index, case in enumerate(cases):
        show = functools.partial(progress.show, index, len(cases), case.name)  # show(step, transient=False)
        started, cpu_at_start = time.perf_counter(), contention.snapshot()
        try:
            result = run_case(case, settings, show)
        except Exception as exc:
            result = {"name": case.name, "family": case.family, "error": _describe(exc)}
            traceback.print_exc()
        result["elapsed_s"] = round(time.perf_counter() - started, 3)
        result["other_cpu_fraction"] = contention.other_cpu_fraction(cpu_at_start, contention.snapshot())
        results.append(result)
    progress.done()
    return results


def run_case(case: Case, settings: Settings, show: Callable[..., None]) -> dict:
    device = settings.device
    torch.manual_seed(SEED)
    inputs = case.setup(device, settings.dtype, settings.quick)
    torch._dynamo.reset()  # compile afresh for each case, so recompile limits never carry over
    contenders, skipped = case.contenders(device)

    with torch.no_grad():
        expected = case.reference(*inputs)
    upstream = torch.randn_like(expected)  # keeps the output's layout (e.g. channels_last)
    calls = {  # mode -> (contender -> a call that runs it once on the inputs)
        FWD: lambda fn: _no_grad_call(fn, inputs),
        FWD_BWD: lambda fn: _grad_call(fn, inputs, upstream, allow_unused=not case.shared_parameters),
    }

    results: dict[str, dict[str, Any]] = {name: {} for name in contenders}
    for name, fn in contenders.items():
        show(f"{name}: first calls" + (" (compiling)" if name == COMPILE else ""))
        try:
            results[name].update(_first_calls(fn, inputs, expected, calls, device, case.tolerance))
        except Exception as exc:  # e.g. torch.compile failing: report it, time the others
            results[name] = {"error": _describe(exc)}
    runnable = {name: fn for name, fn in contenders.items() if "error" not in results[name]}

    timings: dict[str, dict[str, Timing]] = {}
    for mode, make_call in calls.items():
        mode_calls = {name: make_call(fn) for name, fn in runnable.items()}
        if mode == FWD and case.bandwidth_bound:
            mode_calls[CLONE] = _no_grad_call(torch.clone, inputs[:1])
        timings[mode] = time_interleaved(
            mode_calls,
            settings.timed_rounds if case.max_rounds is None else min(settings.timed_rounds, case.max_rounds),
            settings.warmup_rounds if case.max_rounds is None else min(settings.warmup_rounds, 1),
            device,
            on_round=lambda i, n, mode=mode: show(f"timing {MODE_LABELS[mode]}, round {i + 1}/{n}", transient=True),
        )

    show("memory")
    for name, fn in runnable.items():
        results[name]["saved_bytes"] = saved_tensor_bytes(functools.partial(fn, *inputs))
        # what the call adds for backward beyond its inputs (in a network, the previous layer's
        # output and the parameters are alive anyway)
        results[name]["saved_activation_bytes"] = saved_tensor_bytes(functools.partial(fn, *inputs), inputs)
        results[name]["peak_bytes"] = peak_allocated_bytes(calls[FWD_BWD](fn), device)

    clone = timings[FWD].pop(CLONE, None)
    for name in runnable:
        for mode in calls:
            results[name][mode] = {**results[name][mode], **_mode_results(name, timings[mode])}
        for key in ("saved_bytes", "saved_activation_bytes"):
            eager = results.get(EAGER, {}).get(key)
            results[name][f"{key}_vs_eager"] = results[name][key] / eager if eager else None
        fwd_ms = timings[FWD][name].median_ms
        results[name]["fwd_over_clone"] = fwd_ms / clone.median_ms if clone else None
        results[name]["copy_bandwidth_fraction"] = clone.median_ms / fwd_ms if clone else None

    return {
        "name": case.name,
        "family": case.family,
        "description": case.description,
        "device": str(device),
        "dtype": str(settings.dtype).removeprefix("torch."),
        "inputs": [_describe_tensor(t) for t in inputs],
        "output": _describe_tensor(expected),  # and the upstream gradient's layout
        "bandwidth_bound": case.bandwidth_bound,
        "clone_ms": clone.median_ms if clone else None,
        "clone_min_ms": clone.min_ms if clone else None,
        # a copy reads and writes every byte once
        "copy_GBps": 2 * inputs[0].nbytes / clone.median_ms / 1e6 if clone else None,
        "contenders": results,
        "skipped": skipped,
        "targets": evaluate_targets(case, results, judged=not settings.quick),
    }


def evaluate_targets(case: Case, results: dict[str, dict], judged: bool = True) -> list[dict]:
    """One entry per (target, medkern contender); a target no medkern contender ran for fails.

    Targets are stated for the full shapes: on quick (tiny) shapes, where per-call overhead
    dominates, the values are reported but not judged (``passed`` is None).
    """
    medkern = [name for name in results if is_medkern(name)]
    entries = []
    for target in case.targets:
        bound = {"metric": list(target.metric), "minimum": target.minimum, "maximum": target.maximum}
        if not medkern:
            entries.append({"target": target.label, "contender": None, "value": None, **bound,
                            "passed": False if judged else None})
        for name in medkern:
            value = target.value_in(results[name])
            entries.append({"target": target.label, "contender": name, "value": value, **bound,
                            "passed": target.met_by(value) if judged else None})
    return entries


def _no_grad_call(fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...]) -> Callable[[], Any]:
    def call():
        with torch.no_grad():
            return fn(*inputs)

    return call


def _grad_call(fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], upstream: torch.Tensor,
               allow_unused: bool = False) -> Callable[[], Any]:
    """Forward and backward of ``fn`` for the gradients of every input that requires one; an input
    ``fn`` does not use is an error unless ``allow_unused`` (twins that do not share parameters, a
    convolution-only twin without the norms' parameters)."""
    wrt = tuple(t for t in inputs if t.requires_grad)

    def call():
        return torch.autograd.grad(fn(*inputs), wrt, upstream, allow_unused=allow_unused)

    return call


def _first_calls(fn, inputs, expected: torch.Tensor, calls, device: torch.device,
                 tolerance: Optional[tuple[str, str]]) -> dict[str, Any]:
    """Runs each mode once (torch.compile compiles here), timing it, and checks the output."""
    results: dict[str, Any] = {}
    for mode, make_call in calls.items():
        started = time.perf_counter()
        make_call(fn)()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        results[mode] = {"first_call_ms": (time.perf_counter() - started) * 1e3}
    with torch.no_grad():
        output = fn(*inputs)
    results["max_abs_diff"] = (output.double() - expected.double()).abs().max().item()
    results["matches_eager"] = _close(output, expected, tolerance)
    return results


def _close(actual: torch.Tensor, expected: torch.Tensor, tolerance: Optional[tuple[str, str]] = None) -> bool:
    try:
        if tolerance is not None and expected.dtype in tolerances.TOLERANCES.get(tolerance, {}):
            tolerances.assert_close(actual, expected, *tolerance, expected.dtype)
        else:
            torch.testing.assert_close(actual, expected)
    except AssertionError:
        return False
    return True


def _mode_results(name: str, timings: dict[str, Timing]) -> dict[str, Any]:
    own = timings[name]
    speedups = {
        f"speedup_vs_{baseline}": timings[baseline].median_ms / own.median_ms if baseline in timings else None
        for baseline in (EAGER, COMPILE)
    }
    return {"median_ms": own.median_ms, "min_ms": own.min_ms, **speedups, "samples_ms": list(own.samples_ms)}


def _describe_tensor(t: torch.Tensor) -> dict:
    if t.is_contiguous():
        layout = "contiguous"
    elif t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        layout = "channels_last"
    else:
        layout = "strided"
    return {"shape": list(t.shape), "layout": layout, "requires_grad": t.requires_grad}


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 2000 else text[:2000] + " ..."
