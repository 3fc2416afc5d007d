"""Exploration for issue 6 (not part of `medkern bench`): norm_act forward and forward+backward in
channels-last layouts, the shapes of ResNet-18 (batch norm, relu) and DynUNet (instance norm, lrelu).

    python benchmarks/explorations/norm_act_channels_last_cpu.py        # THREADS=1 for one thread

Prints the fastest of 40 interleaved calls of each. Run it alternately against two builds of medkern
(PYTHONPATH) to tell a kernel change's effect from the machine's drift.
"""

import os

import torch

import medkern
from medkern.bench.timing import time_interleaved

torch.set_num_threads(int(os.environ.get("THREADS", torch.get_num_threads())))
torch.manual_seed(0)
CASES = [("batch", (16, 64, 64, 64), "relu"), ("batch", (16, 64, 32, 32), "relu"), ("batch", (16, 256, 8, 8), "relu"),
         ("batch", (16, 512, 4, 4), "relu"), ("instance", (2, 32, 48, 48, 48), "lrelu"),
         ("instance", (2, 64, 24, 24, 24), "lrelu"), ("instance", (2, 320, 6, 6, 6), "lrelu")]
for kind, shape, act in CASES:
    layout = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    x = torch.randn(shape).contiguous(memory_format=layout).requires_grad_()
    channels = shape[1]
    w, b = torch.ones(channels, requires_grad=True), torch.zeros(channels, requires_grad=True)
    running = (torch.zeros(channels), torch.ones(channels)) if kind == "batch" else (None, None)
    g = torch.randn_like(x)

    def forward():
        with torch.no_grad():
            return medkern.ops.norm_act(x, kind, w, b, *running, True, 0.1, 1e-5, act)

    def forward_backward():
        return torch.autograd.grad(medkern.ops.norm_act(x, kind, w, b, *running, True, 0.1, 1e-5, act), (x, w, b), g)

    t = time_interleaved({"fwd": forward, "fwd_bwd": forward_backward}, repeats=40, warmup=3)
    print(f"{kind:<9}{str(shape):<22}{act:<6} fwd min {t['fwd'].min_ms * 1e3:7.0f} us  "
          f"fwd+bwd min {t['fwd_bwd'].min_ms * 1e3:7.0f} us")
