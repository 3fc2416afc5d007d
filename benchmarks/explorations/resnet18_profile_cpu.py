"""Exploration for issue 6 (not part of `medkern bench`): where a ResNet-18 training step's CPU time
goes, medkern.swap(model, channels_last=True) against eager with the model laid out channels-last,
and how many minor page faults each step takes.

    python benchmarks/explorations/resnet18_profile_cpu.py [rounds]

Each round profiles one step of each (torch.profiler, self CPU time per op); prints the median
over rounds of every op's time, the largest first, then each model's minor faults per step
(getrusage over 10 steps). Batch 16 x 3 x 128^2, as `medkern bench`'s model/resnet18_* cases.
"""

import collections
import resource
import statistics
import sys

import torch
from torch.profiler import ProfilerActivity, profile
from torchvision.models import resnet18

import medkern

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
torch.manual_seed(0)
models = {
    "swap": medkern.swap(resnet18(num_classes=10), channels_last=True),
    "eager_channels_last": resnet18(num_classes=10).to(memory_format=torch.channels_last),
}
x = torch.randn(16, 3, 128, 128)


def step(model):
    out = model(x)
    return torch.autograd.grad(out, list(model.parameters()), torch.ones_like(out))


for model in models.values():
    for _ in range(2):
        step(model)
times = collections.defaultdict(lambda: collections.defaultdict(list))
for _ in range(rounds):
    for name, model in models.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(model)
        for event in prof.key_averages():
            times[event.key][name].append(event.self_cpu_time_total / 1e3)
medians = {op: {name: statistics.median(v) for name, v in by.items()} for op, by in times.items()}
totals = {name: sum(m.get(name, 0.0) for m in medians.values()) for name in models}
print("self CPU ms per step, median of", rounds, "rounds; totals:", {k: round(v, 1) for k, v in totals.items()})
for op, by in sorted(medians.items(), key=lambda kv: -max(kv[1].values()))[:25]:
    print(f"  {op[:58]:<58}" + "".join(f"  {name} {by.get(name, 0.0):7.2f}" for name in models))
for name, model in models.items():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step(model)
    print(f"{name}: {(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10:.0f} minor faults per step")
