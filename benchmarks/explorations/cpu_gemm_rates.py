"""Exploration (not part of `medkern bench`): how fast this CPU's GEMMs run, in GFLOP/s, at an RNN's
shapes (LSTM(128, 256), 100 steps x batch 32): torch.mm (MKL), oneDNN's linear
(torch.ops.mkldnn._linear_pointwise), medkern::transposed_product with each of rnn_cpu_gemm's
choices, and a 3x3 convolution (oneDNN) for the machine's reachable rate.

    python benchmarks/explorations/cpu_gemm_rates.py

On CPUs other than Intel's MKL runs a generic code path (medkern/ops/projection.py,
csrc/cpu/gemm_kernel.cpp): this shows by how much.
"""

import torch
import torch.nn.functional as F

from medkern import _extension
from medkern.bench.timing import time_interleaved

torch.manual_seed(0)
TB, I, G, H = 3200, 128, 1024, 256
x, w_ih, g, states = torch.randn(TB, I), torch.randn(G, I), torch.randn(TB, G), torch.randn(TB, H)
h, w_hh = torch.randn(32, H), torch.randn(G, H)
image = torch.randn(16, 64, 32, 32).contiguous(memory_format=torch.channels_last)
kernel = torch.randn(64, 64, 3, 3).contiguous(memory_format=torch.channels_last)
linear = torch.ops.mkldnn._linear_pointwise
product = torch.ops.medkern.transposed_product


def with_gemm(choice, fn):
    def run():
        _extension.rnn_cpu_gemm(choice)
        return fn()
    return run


calls = {  # name: (call, multiply-adds)
    "projection x @ w_ih.T, torch.mm": (lambda: x @ w_ih.t(), TB * I * G),
    "projection, oneDNN linear": (lambda: linear(x, w_ih, None, "none", [], ""), TB * I * G),
    "step h @ w_hh.T, torch.mm": (lambda: h @ w_hh.t(), 32 * H * G),
    "w_hh gradient g.T @ states, torch.mm": (lambda: g.t() @ states, TB * G * H),
    "w_hh gradient, transposed_product (library)": (with_gemm("library", lambda: product(g, states)), TB * G * H),
    "w_hh gradient, transposed_product (medkern)": (with_gemm("medkern", lambda: product(g, states)), TB * G * H),
    "conv 3x3 64->64, 16x32x32, channels-last": (lambda: F.conv2d(image, kernel, padding=1), 16 * 32 * 32 * 64 * 64 * 9),
}
times = time_interleaved({name: call for name, (call, _) in calls.items()}, repeats=20, warmup=3)
_extension.rnn_cpu_gemm("auto")
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, rnn_cpu_gemm auto = {_extension.rnn_cpu_gemm()}")
for name, (_, macs) in calls.items():
    ms = times[name].median_ms
    print(f"  {name:<46} {ms:7.2f} ms  {2 * macs / ms / 1e6:6.0f} GFLOP/s")
