"""The speed-up a fused epilogue can reach at most in a convolution-bound case, measured.

    python -m medkern.bench.ceiling [--quick] [--rounds 5] [--filter SUBSTRING] [--out DIR]

medkern's CPU path runs the library's convolution (oneDNN through ATen) and fuses what comes
after it: bias, normalization, activation. For every case with a speed-up target over eager,
eager's call (forward + ``torch.autograd.grad`` for a fwd+bwd target, as ``medkern bench`` times
it; the forward under no_grad for a fwd target) runs ``--rounds`` times under torch.profiler. The
self CPU time of the convolution ops (forward, input and weight gradients) over the self CPU time
of every op is the convolution's share s (and torch's FLOP counter gives the rate the convolutions
ran at, to compare with the CPU's peak). Were every other op free, the step would take s of
eager's time, so no fusion around the library convolution beats ``1 / s`` while the convolutions
take as long as in eager's call: a target above that ceiling needs a faster convolution than the
library's. The share is an estimate: the profiler adds a cost to every op and leaves out the time
between ops (Python, dispatch), and the machine's noise moves it from run to run, so compare
several runs. medkern's convolution time is reported too, since memory effects (fewer fresh
pages to fault) can make the same convolutions faster in medkern's call. Only cases whose medkern call runs library
convolutions too are reported (medkern's own upfirdn2d replaces the convolution of its reference,
for one). Writes ``ceiling.json`` and ``ceiling.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from .case import EAGER, Case, _under_backend
from .cases import all_cases
from .suite import SEED, _grad_call, _no_grad_call
from .timing import time_interleaved

LIBRARY_NAMESPACES = ("aten::", "mkldnn::")


def is_convolution(op_name: str) -> bool:
    """ATen's convolution ops and their backends (mkldnn_convolution, convolution_backward, slow_conv*,
    oneDNN's fused _convolution_pointwise, ...)."""
    return op_name.startswith(LIBRARY_NAMESPACES) and "conv" in op_name


def speedup_targets(case: Case) -> list[tuple[str, float]]:
    """(mode, factor) of each target asking medkern to be ``factor`` times as fast as eager."""
    return [(t.metric[0], t.minimum) for t in case.targets
            if t.metric[1:] == (f"speedup_vs_{EAGER}",) and t.minimum is not None]


def _profiled_ms(fn, inputs: tuple, upstream: torch.Tensor, mode: str, rounds: int) -> tuple[float, float]:
    """(all ops, convolution ops) self CPU milliseconds per call of ``fn`` in ``mode``."""
    call = _grad_call(fn, inputs, upstream) if mode == "fwd_bwd" else _no_grad_call(fn, inputs)
    call()  # warm-up: first-call allocations and oneDNN primitive creation
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            call()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if is_convolution(e.key))
    return total / rounds / 1e3, conv / rounds / 1e3


def convolution_flops(fn, inputs: tuple, upstream: torch.Tensor, mode: str) -> Optional[float]:
    """The multiply-adds x 2 of the convolution ops in one call of ``fn`` (torch's FLOP counter), or
    None where the counter cannot follow the call (its module hooks refuse a double backward)."""
    wrt = [t for t in inputs if t.requires_grad]
    kept = [t.grad for t in wrt]
    try:
        with FlopCounterMode(display=False) as counter:
            if mode == "fwd_bwd":  # the counter's hooks need backward(), not autograd.grad
                torch.autograd.backward(fn(*inputs), upstream, inputs=wrt)
            else:
                with torch.no_grad():
                    fn(*inputs)
    except RuntimeError:
        return None
    finally:
        for t, grad in zip(wrt, kept):
            t.grad = grad
    counts = counter.get_flop_counts().get("Global", {})  # empty when nothing was counted
    return float(sum(n for op, n in counts.items() if "conv" in str(op))) or None


def convolution_share(case: Case, mode: str, rounds: int, quick: bool) -> dict:
    """The convolution ops' share of eager's self CPU time in ``mode``, and medkern's convolution time."""
    torch.manual_seed(SEED)
    inputs = case.setup(torch.device("cpu"), torch.float32, quick)
    with torch.no_grad():
        upstream = torch.randn_like(case.reference(*inputs))
    total, conv = _profiled_ms(case.reference, inputs, upstream, mode, rounds)
    medkern_total, medkern_conv = _profiled_ms(_under_backend(case.fused, "cpu"), inputs, upstream, mode, rounds)
    share = conv / total if total else float("nan")
    flops = convolution_flops(case.reference, inputs, upstream, mode)
    return {"eager_ms_profiled": total, "convolution_ms": conv, "convolution_share": share,
            "ceiling": 1 / share if share else float("inf"), "medkern_ms_profiled": medkern_total,
            "medkern_convolution_ms": medkern_conv,
            "convolution_gflops_per_s": flops / conv / 1e6 if flops and conv else None}


def direct_ceiling(case: Case, rounds: int, quick: bool) -> dict:
    """A training step of eager, medkern and the convolution-only twin (``case.conv_only``), timed
    interleaved without a profiler: the twin's time is the floor, eager's over it the ceiling."""
    torch.manual_seed(SEED)
    inputs = case.setup(torch.device("cpu"), torch.float32, quick)
    with torch.no_grad():
        upstream = torch.randn_like(case.reference(*inputs))
    steps = {EAGER: case.reference, "medkern": _under_backend(case.fused, "cpu"), "conv_only": case.conv_only}
    timings = time_interleaved({name: _grad_call(fn, inputs, upstream, allow_unused=True)  # the twin: no norms
                                for name, fn in steps.items()}, repeats=rounds, warmup=1)
    eager, medkern, floor = (timings[name].median_ms for name in (EAGER, "medkern", "conv_only"))
    return {"eager_ms": eager, "medkern_step_ms": medkern, "conv_only_ms": floor, "direct_ceiling": eager / floor,
            "medkern_speedup": eager / medkern}


def run(quick: bool = False, rounds: int = 5, name_filter: str = "") -> list[dict]:
    rows = []
    for case in all_cases():
        if name_filter not in case.name or not case.shared_parameters:
            continue  # a twin laid out otherwise gains from the layout too: the ceiling does not bound it
        for mode, factor in speedup_targets(case):
            measured = convolution_share(case, mode, rounds, quick)
            if measured["convolution_ms"] == 0 or measured["medkern_convolution_ms"] == 0:
                continue  # one of them runs no library convolution: the ceiling says nothing
            if case.conv_only is not None and mode == "fwd_bwd":
                measured.update(direct_ceiling(case, rounds, quick))
            rows.append({"case": case.name, "mode": mode, "target": factor, **measured,
                         "target_above_ceiling": factor > measured.get("direct_ceiling", measured["ceiling"])})
    return rows


MARKDOWN_HEADER = ("# Convolution share and speed-up ceiling (`python -m medkern.bench.ceiling`)\n\n"
                   "Self CPU time under torch.profiler per call, float32. The ceiling is eager's time over its "
                   "convolutions' time: the speed-up if every other op were free and the convolutions took as "
                   "long in medkern's call as in eager's. An estimate: the profiler adds a cost to every op and "
                   "leaves out the time between ops, and it moves from run to run with the machine's noise; "
                   "where medkern's convolutions run faster than eager's (last column: fewer fresh pages to "
                   "fault, warmer caches), medkern can pass it. For model cases the step is also timed without "
                   "the profiler, interleaved, against the model's convolution-only twin (medkern/bench/conv_only.py: "
                   "norms, activations and dropouts removed, pools made strided slices): eager over the twin is "
                   "the direct ceiling, which the verdict uses where it is measured.")


def table(rows: list[dict]) -> str:
    lines = ["| case | mode | eager (profiled) ms | its convolutions ms | their GFLOP/s | share | ceiling | target | "
             "medkern (profiled) ms | its convolutions ms | step: eager / conv-only / medkern ms | direct ceiling | "
             "medkern vs eager |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        verdict = " (above the ceiling)" if r["target_above_ceiling"] else ""
        rate = r.get("convolution_gflops_per_s")
        direct = ("| | | |" if "direct_ceiling" not in r else
                  f"| {r['eager_ms']:.1f} / {r['conv_only_ms']:.1f} / {r['medkern_step_ms']:.1f} | "
                  f"{r['direct_ceiling']:.2f}x | {r['medkern_speedup']:.2f}x |")
        lines.append(f"| {r['case']} | {'fwd+bwd' if r['mode'] == 'fwd_bwd' else r['mode']} | "
                     f"{r['eager_ms_profiled']:.1f} | {r['convolution_ms']:.1f} | "
                     f"{'' if rate is None else f'{rate:.0f}'} | {r['convolution_share']:.0%} | "
                     f"{r['ceiling']:.2f}x | {r['target']:g}x{verdict} | {r['medkern_ms_profiled']:.1f} | "
                     f"{r['medkern_convolution_ms']:.1f} {direct}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medkern.bench.ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    parser.add_argument("--rounds", type=int, default=5, help="profiled calls per case (default 5)")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--out", default=None, help="directory for ceiling.json")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    rows = run(args.quick, args.rounds, args.filter)
    print(table(rows))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds,
                "quick": args.quick}
        (out / "ceiling.json").write_text(json.dumps({"environment": meta, "rows": rows}, indent=2))
        (out / "ceiling.md").write_text(f"{MARKDOWN_HEADER}\n\n{table(rows)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
