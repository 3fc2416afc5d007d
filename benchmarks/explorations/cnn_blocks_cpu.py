"""Exploration for the CNN-layers issue (not part of `medkern bench`): how much of a CPU
training step of the issue's blocks is the convolution, in NCHW and in channels_last.

    python benchmarks/explorations/cnn_blocks_cpu.py

Medians of a few runs, not interleaved: a first look to size the work, not a result to quote
as a speed-up (the cases go into medkern/bench/cases when the fused modules exist).
"""

import time

import torch
from torch import nn


def median_ms(fn, repeats=5):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def training_step(module, x):
    def step():
        y = module(x)
        y.backward(torch.ones_like(y))

    return step


def main():
    torch.manual_seed(0)
    blocks = {
        "resnet (8x64x56x56)": (
            lambda: nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()),
            (8, 64, 56, 56), torch.channels_last),
        "nnunet (2x32x48^3)": (
            lambda: nn.Sequential(nn.Conv3d(32, 32, 3, padding=1), nn.InstanceNorm3d(32, affine=True), nn.LeakyReLU(0.01)),
            (2, 32, 48, 48, 48), torch.channels_last_3d),
    }
    for name, (make, shape, last) in blocks.items():
        for layout in (torch.contiguous_format, last):
            block = make().to(memory_format=layout)
            x = torch.randn(shape).to(memory_format=layout).requires_grad_()
            print(f"{name} {str(layout).split('.')[-1]:<18} block step {median_ms(training_step(block, x)):7.1f} ms"
                  f"   conv alone {median_ms(training_step(block[0], x)):7.1f} ms")


if __name__ == "__main__":
    main()
