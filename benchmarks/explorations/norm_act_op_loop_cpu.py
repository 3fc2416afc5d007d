"""Exploration (not part of `medkern bench`): the compiled norm_act op alone, called in a loop, to
compare two builds on small layers where the op's fixed costs (its table steps) dominate.

    PYTHONPATH=<build> python benchmarks/explorations/norm_act_op_loop_cpu.py 16,512,4,4 [bwd] [seconds]

Batch norm + relu on a channels-last input, batch statistics; prints calls and microseconds per
call of torch.ops.medkern.norm_act (or of norm_act_backward with "bwd"). Alternate the builds.
"""

import sys
import time

import torch

import medkern  # noqa: F401  (loads the op library)

shape = tuple(int(v) for v in sys.argv[1].split(","))
backward = len(sys.argv) > 2 and sys.argv[2] == "bwd"
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
channels = shape[1]
weight, bias = torch.rand(channels) + 0.5, torch.zeros(channels)
running_mean, running_var = torch.zeros(channels), torch.ones(channels)
forward_op, backward_op = torch.ops.medkern.norm_act.default, torch.ops.medkern.norm_act_backward.default
y, mean, var = forward_op(x, "batch", weight, bias, running_mean, running_var, True, 1e-5, "relu", 0.0, 1, False)
grad = torch.randn_like(x)


def call():
    if backward:
        backward_op(grad, x, False, mean, var, weight, bias, "batch", True, 1e-5, "relu", 0.0, 1, [True, True, True])
    else:
        forward_op(x, "batch", weight, bias, running_mean, running_var, True, 1e-5, "relu", 0.0, 1, False)


started, calls = time.perf_counter(), 0
while time.perf_counter() - started < seconds:
    call()
    calls += 1
print(f"{calls} calls, {(time.perf_counter() - started) / calls * 1e6:.1f} us per call")
