"""What every example shares: its command line, the data split, and the summary it writes."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

import medkern


def parse_args(description: str, epochs: int, **extra) -> argparse.Namespace:
    """--quick (a smoke run for CI: tiny data and model, 1-2 epochs), --out, --epochs, --seed,
    --device, --reference (the plain-torch twin of the model instead of medkern layers)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny data and model")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: example-results/<name>)")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs (default {epochs}, 2 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reference", action="store_true", help="train the plain-torch twin of the model")
    for flag, options in extra.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", **options)
    args = parser.parse_args()
    args.epochs = args.epochs if args.epochs is not None else (2 if args.quick else epochs)
    return args


def output_folder(args, name: str) -> Path:
    out = args.out if args.out is not None else Path("example-results") / name
    out.mkdir(parents=True, exist_ok=True)
    return out


def split(dataset, fractions=(0.7, 0.15, 0.15)) -> tuple[Subset, Subset, Subset]:
    """Consecutive train/val/test parts (synthetic items are independent draws, so no shuffling needed)."""
    n = len(dataset)
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return Subset(dataset, range(a)), Subset(dataset, range(a, b)), Subset(dataset, range(b, n))


def write_summary(out: Path, name: str, args, history: list[dict], test: dict, started: float, **files) -> dict:
    """``summary.json``: the settings, the last epoch, the test metrics and the files written."""
    def finite(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    summary = {
        "example": name, "quick": args.quick, "epochs": args.epochs, "seed": args.seed, "device": args.device,
        "layers": "torch (reference twin)" if args.reference else "medkern",
        "medkern": medkern.__version__, "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 2),
        "last_epoch": {k: finite(v) for k, v in (history[-1] if history else {}).items()},
        "test": {k: finite(v) for k, v in test.items()},
        "files": {k: str(v) for k, v in files.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["test"], indent=1))
    return summary
