"""How much CPU other processes took while a case ran: on a small machine, a build or a test
run next to the benchmark changes CPU timings by several times, and the load average is too
slow and too coarse to tell. Linux only (reads /proc/stat); None elsewhere."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
NOISY_FRACTION = 0.1  # above this share of the machine, timings are not worth trusting


@dataclass(frozen=True)
class CpuSnapshot:
    machine_busy_s: float  # all processes, all cores
    own_cpu_s: float  # this process, all threads
    wall_s: float


def snapshot() -> Optional[CpuSnapshot]:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    times = os.times()
    return CpuSnapshot(
        (user + nice + system + irq + softirq) / _TICKS_PER_SECOND,
        times.user + times.system + times.children_user + times.children_system,
        time.monotonic(),
    )


def other_cpu_fraction(start: Optional[CpuSnapshot], end: Optional[CpuSnapshot]) -> Optional[float]:
    """Share of the machine's CPU (0..1) used by other processes between two snapshots."""
    if start is None or end is None or end.wall_s <= start.wall_s:
        return None
    others = (end.machine_busy_s - start.machine_busy_s) - (end.own_cpu_s - start.own_cpu_s)
    fraction = others / ((end.wall_s - start.wall_s) * (os.cpu_count() or 1))
    return round(min(max(fraction, 0.0), 1.0), 3)
