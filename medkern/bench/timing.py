"""Timing contenders against each other: warm-up, then interleaved repeats, median per contender.

Contenders run round-robin (A, B, C, A, B, C, ...) rather than one after the other, so a
slow drift of the machine (frequency scaling, another process, page cache) spreads over all
of them instead of landing on whichever ran last. Every call is timed whole, including the
allocation of its outputs, which each contender pays the same way (on CPU, large outputs are
fresh mmap'd pages whose first touch is part of the cost of any op that writes them).

On CPU a call is timed with a wall clock. On CUDA each call sits between two CUDA events, a
round is synchronized only at its end (so launch latency overlaps the previous call, as in
``triton.testing.do_bench``), and a buffer larger than L2 is zeroed before each call so no
contender reads the previous one's data from cache.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch

_L2_FLUSH_BYTES = 256 * 2**20  # larger than any current GPU's L2


@dataclass(frozen=True)
class Timing:
    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)


def time_interleaved(
    calls: Mapping[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    device: Optional[torch.device] = None,
    clock: Callable[[], float] = time.perf_counter,
    on_round: Optional[Callable[[int, int], None]] = None,
) -> dict[str, Timing]:
    """Times each call ``repeats`` times, round-robin after ``warmup`` untimed rounds.

    ``device`` None means CPU. ``clock`` (seconds) is used on CPU only; tests pass a fake one. ``on_round(i, repeats)``
    is called before each timed round (progress display).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    run_round = _cuda_round(device) if device is not None and device.type == "cuda" else _cpu_round(clock)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        if on_round is not None:
            on_round(i, repeats)
        for name, ms in zip(names, run_round([calls[name] for name in names]), strict=True):
            samples[name].append(ms)
    return {name: Timing(tuple(samples[name])) for name in names}


def _cpu_round(clock: Callable[[], float]):
    def run_round(fns: list[Callable[[], Any]]) -> list[float]:
        times = []
        for fn in fns:
            start = clock()
            fn()
            times.append((clock() - start) * 1e3)
        return times

    return run_round


def _cuda_round(device: torch.device):
    flush = torch.empty(_L2_FLUSH_BYTES, dtype=torch.uint8, device=device)

    def run_round(fns: list[Callable[[], Any]]) -> list[float]:
        events = []
        for fn in fns:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            flush.zero_()
            start.record()
            fn()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events]

    return run_round
