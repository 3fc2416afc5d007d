"""The ``medkern`` command: ``medkern info``, ``medkern bench`` and ``medkern check``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

DTYPES = ("float32", "float64", "float16", "bfloat16")
# medkern.check.CHECKS' keys (a test holds them equal)
CHECKED_OPS = ("bias_act", "norm_act", "max_pool", "rnn_sequence", "upfirdn2d", "pixel_norm", "minibatch_stddev",
               "modulate_weight", "modules")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return args.command(args, parser)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medkern", description="medkern: fused PyTorch kernels.")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="what this installation can run (extension, CUDA, Triton, backend)")
    info.set_defaults(command=_info)

    bench = commands.add_parser(
        "bench",
        help="benchmark medkern against PyTorch eager and torch.compile",
        description="Times every case forward and forward+backward; writes results.json, results.md, results.png.",
    )
    bench.add_argument("--quick", action="store_true", help="small shapes and few repeats (a smoke run)")
    bench.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    bench.add_argument("--filter", metavar="SUBSTRING", help="only cases whose name contains SUBSTRING")
    bench.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR", help="default: %(default)s")
    bench.add_argument("--repeats", type=_positive_int, metavar="N", help="timed rounds (default: 5 quick, 20 full)")
    bench.add_argument("--warmup", type=_non_negative_int, metavar="N", help="untimed rounds (default: 1 quick, 3 full)")
    bench.add_argument("--dtype", choices=DTYPES, default="float32", help="default: %(default)s")
    bench.add_argument("--list", action="store_true", help="list the cases and exit")
    bench.add_argument("--model", metavar="MODULE:FACTORY",
                       help="instead of the suite: a training step of this model (FACTORY() returns an nn.Module), "
                            "as it is and after medkern.swap; needs --input-shape")
    bench.add_argument("--input-shape", type=_shape, metavar="N,C,...", help="the --model's input shape")
    bench.add_argument("--channels-last", action="store_true",
                       help="with --model: also time medkern.swap(model, channels_last=True) against the original")
    bench.set_defaults(command=_bench)

    check = commands.add_parser(
        "check",
        help="check every kernel against the reference on the devices and backends available here",
        description="Exits 1 if any kernel disagrees with the reference beyond medkern's tolerance table.",
    )
    check.add_argument("--device", choices=("cpu", "cuda"), action="append", help="default: every device available")
    check.add_argument("--backend", choices=("cpu", "cuda", "triton"), action="append", help="default: all")
    check.add_argument("--dtype", choices=DTYPES, action="append", help="default: all")
    check.add_argument("--op", choices=CHECKED_OPS, action="append", help="default: all")
    check.set_defaults(command=_check)
    return parser


def _info(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .info import format_info, info

    print(format_info(info()))
    return 0


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes such as 2,3,224,224, got {text!r}") from None
    if not shape or any(size < 0 for size in shape):
        raise argparse.ArgumentTypeError(f"expected sizes >= 0, got {text!r}")
    return shape


def _bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .bench import cases as registry
    from .bench.environment import busy_warning, environment
    from .bench.progress import Progress
    from .bench.report import build_document, text_summary, write_all
    from .bench.suite import Settings, run_suite

    if (args.model is None) != (args.input_shape is None):
        parser.error("--model and --input-shape go together")
    if args.channels_last and args.model is None:
        parser.error("--channels-last goes with --model (the suite has its *_swap_channels_last cases)")
    if args.model is not None:
        try:
            cases = registry.custom_model_cases(args.model, args.input_shape, args.channels_last)
        except ValueError as error:
            parser.error(str(error))
    else:
        cases = registry.select(args.filter)
    if not cases:
        names = ", ".join(case.name for case in registry.all_cases())
        parser.error(f"no case name contains {args.filter!r}; the cases are: {names}")
    if args.list:
        print("\n".join(f"{case.name:<32} {case.description}" for case in cases))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    warning = busy_warning() if device.type == "cpu" else None
    if warning:
        print(f"medkern bench: warning: {warning}", file=sys.stderr)
    settings = Settings(device, getattr(torch, args.dtype), args.quick, args.repeats, args.warmup)
    results = run_suite(cases, settings, Progress())
    document = build_document(environment(device), settings, results)
    paths = write_all(document, args.out)
    print(text_summary(document))
    written = ", ".join(str(path) for path in paths.values() if path is not None)
    print(f"\nWrote {written}" + ("" if paths["png"] else " (no chart: see results.md)"))
    return 0


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .check import DTYPES as ALL_DTYPES
    from .check import run_check, summary

    if args.device and "cuda" in args.device and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    dtypes = tuple(getattr(torch, name) for name in args.dtype) if args.dtype else ALL_DTYPES
    results, skipped = run_check(args.device, args.backend, dtypes, args.op)
    print(summary(results, skipped))
    if not results:
        print("medkern check: nothing ran (no backend can run here)", file=sys.stderr)
        return 1
    return 0 if all(r.ok for r in results) else 1


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
