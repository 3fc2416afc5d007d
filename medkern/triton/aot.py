"""Compile every Triton kernel variant ahead of time for real GPU targets, without a GPU.

The interpreter (which the CPU tests use) accepts code that Triton's compiler rejects, so CI
also compiles each variant for sm_80 and sm_90 here. Run as

    TRITON_INTERPRET=0 python -m medkern.triton.aot --arch 80 --arch 90

It prints one JSON line per variant (name, arch, PTX and cubin sizes, PTX target) and exits
non-zero if any variant fails to compile.
"""

from __future__ import annotations

import argparse
import json
import re
import sys


def variant_modules():
    """The kernel modules, each with ``aot_variants()`` yielding (name, kernel, signature, constexprs)."""
    from . import bias_act, conv_act, norm_act, rnn

    return [bias_act, conv_act, norm_act, rnn]


def compile_variant(kernel, signature, constexprs, arch: int) -> dict:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    compiled = triton_compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", arch, 32))
    ptx = compiled.asm["ptx"]
    target = re.search(r"^\.target\s+(\S+)", ptx, re.MULTILINE)
    return {"ptx_bytes": len(ptx), "cubin_bytes": len(compiled.asm["cubin"]), "ptx_target": target and target.group(1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 80 (repeatable)")
    args = parser.parse_args(argv)
    import os

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1 is set: the interpreter cannot compile; run with TRITON_INTERPRET=0")
    failures = 0
    for module in variant_modules():
        for name, kernel, signature, constexprs in module.aot_variants():
            for arch in args.arch or [80, 90]:
                record = {"variant": name, "arch": arch}
                try:
                    record.update(compile_variant(kernel, signature, constexprs, arch))
                except Exception as exc:  # report every failure, not just the first
                    failures += 1
                    record["error"] = f"{type(exc).__name__}: {exc}"
                print(json.dumps(record), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
