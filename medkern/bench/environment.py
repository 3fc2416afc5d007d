"""Where a benchmark ran: machine, device, thread count, versions and commit."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

import torch

from .. import __version__, backend

_CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root of an editable install


def environment(device: torch.device) -> dict:
    commit = git_commit()
    return {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "medkern": __version__,
        "triton": backend.triton_version(),
        "python": platform.python_version(),
        "commit": commit,
        "commit_dirty": git_dirty() if commit else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # Other work on the machine skews CPU timings (with 2 cores, badly): taken after the
        # run, the 1 and 5 minute figures say whether anything else was running meanwhile.
        "load_average": [round(load, 2) for load in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def busy_warning() -> Optional[str]:
    """A warning if the machine is already busy (CPU timings would measure the contention)."""
    if not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load < 0.5 * cores:
        return None
    return f"the machine is busy (load average {load:.2f} on {cores} cores): CPU timings will be noisy"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model() or platform.processor() or platform.machine()


def _cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _git(*args: str) -> Optional[str]:
    """git's output in the checkout medkern runs from; None outside one or without git."""
    try:
        done = subprocess.run(["git", *args], cwd=_CHECKOUT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> Optional[str]:
    # An installed (non-editable) medkern sits in site-packages: only trust a checkout that
    # actually holds this medkern package.
    if not (_CHECKOUT / "setup.py").exists():
        return None
    return _git("rev-parse", "HEAD") or None


def git_dirty() -> Optional[bool]:
    """Whether tracked files differ from the commit (results then describe uncommitted code)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)
