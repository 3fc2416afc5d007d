"""Compile every Triton kernel variant ahead of time for real GPU targets, without a GPU.

The interpreter (which the CPU tests use) accepts code that Triton's compiler rejects, so CI
also compiles each variant for sm_80 and sm_90 here. Run as

    TRITON_INTERPRET=0 python -m medkern.triton.aot --arch 80 --arch 90

It prints one JSON line per variant (name, arch, PTX and cubin sizes, PTX target), in the order
they finish, and exits non-zero if any variant fails to compile. Compiling is single-threaded, so
the variants are shared out among ``--jobs`` processes (default: one per CPU).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor


def variant_modules():
    """The kernel modules, each with ``aot_variants()`` yielding (name, kernel, signature, constexprs)."""
    from . import (bias_act, conv_act, max_pool, minibatch_stddev, modulate_weight, norm_act, pixel_norm, rnn,
                   upfirdn2d)

    return [bias_act, conv_act, norm_act, max_pool, rnn, upfirdn2d, pixel_norm, minibatch_stddev, modulate_weight]


def compile_variant(kernel, signature, constexprs, arch: int) -> dict:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    compiled = triton_compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", arch, 32))
    ptx = compiled.asm["ptx"]
    target = re.search(r"^\.target\s+(\S+)", ptx, re.MULTILINE)
    return {"ptx_bytes": len(ptx), "cubin_bytes": len(compiled.asm["cubin"]), "ptx_target": target and target.group(1)}


@functools.lru_cache(maxsize=None)
def _variants(module_name: str) -> list:
    return list(importlib.import_module(module_name).aot_variants())


def compile_job(module_name: str, index: int, arch: int) -> dict:
    """The record of variant ``index`` of ``module_name`` compiled for ``arch`` (a worker's task:
    kernels do not pickle, so a worker finds the variant by module and position)."""
    name, kernel, signature, constexprs = _variants(module_name)[index]
    record = {"variant": name, "arch": arch}
    try:
        record.update(compile_variant(kernel, signature, constexprs, arch))
    except Exception as exc:  # report every failure, not just the first
        record["error"] = f"{type(exc).__name__}: {exc}"
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 80 (repeatable)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: %(default)s)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1 is set: the interpreter cannot compile; run with TRITON_INTERPRET=0")
    jobs = [(module.__name__, index, arch) for module in variant_modules()
            for index in range(len(_variants(module.__name__))) for arch in args.arch or [80, 90]]
    failures = 0
    # spawn: workers start clean rather than as forks of a process that has torch's threads
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        for record in pool.map(compile_job, *zip(*jobs), chunksize=8):
            failures += "error" in record
            print(json.dumps(record), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
