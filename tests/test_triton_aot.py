"""Every Triton kernel variant compiles for sm_80 and sm_90 (no GPU needed).

The interpreter, which the CPU tests run, accepts code that Triton's compiler rejects, so this
compiles each variant for real targets in a subprocess where the interpreter is off.
"""

import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")


def test_every_variant_compiles_for_sm80_and_sm90():
    import medkern.triton.aot as aot

    env = dict(os.environ, TRITON_INTERPRET="0")
    done = subprocess.run(
        [sys.executable, "-m", "medkern.triton.aot", "--arch", "80", "--arch", "90"],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    failures = [r for r in records if "error" in r]
    assert not failures, json.dumps(failures[:5], indent=1)
    assert done.returncode == 0, done.stderr[-2000:]

    expected = {name for module in aot.variant_modules() for name, *_ in module.aot_variants()}
    for arch, target in ((80, "sm_80"), (90, "sm_90")):
        compiled = {r["variant"] for r in records if r["arch"] == arch}
        assert compiled == expected, f"sm_{arch}: missing {sorted(expected - compiled)[:5]}"
        for r in records:
            if r["arch"] == arch:
                assert r["ptx_target"].startswith(target), r
                assert r["ptx_bytes"] > 0 and r["cubin_bytes"] > 0, r
