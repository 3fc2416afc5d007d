"""Exploration for issue 6 (not part of `medkern bench`): what `medkern.swap(model, channels_last=True)`
gives a model users keep in the default layout, and how much of it the layout change alone gives.

    python benchmarks/explorations/swap_channels_last_cpu.py [resnet18|dynunet] [rounds]

A training step (forward, backward of the output's sum) of four copies of the same model, timed
interleaved in one process on the same default-layout input: eager as built, eager with its weights
laid out channels-last (medkern.layout.model_to_channels_last: the layout change alone), medkern.swap
of it, and medkern.swap(..., channels_last=True). Prints each one's median and eager's over it.
"""

import copy
import sys
import warnings

import torch

import medkern
from medkern.bench.cases.models import _dynunet, _image_batch, _resnet18, _volume_batch
from medkern.bench.timing import time_interleaved
from medkern.layout import model_to_channels_last

name = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
build, batch = {"resnet18": (_resnet18, _image_batch), "dynunet": (_dynunet, _volume_batch)}[name]
torch.manual_seed(0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # MONAI's deprecation notices
    original = build(False)
models = {
    "eager": original,
    "eager, channels-last weights": model_to_channels_last(copy.deepcopy(original)),
    "medkern.swap": medkern.swap(original),
    "medkern.swap(channels_last=True)": medkern.swap(original, channels_last=True),
}
x = torch.randn(batch(False))


def step(model):
    def run():
        model.zero_grad(set_to_none=True)
        output = model(x)
        (output if isinstance(output, torch.Tensor) else output[0]).sum().backward()
    return run


timings = time_interleaved({label: step(model) for label, model in models.items()}, repeats=rounds, warmup=1)
eager = timings["eager"].median_ms
print(f"{name}, batch {tuple(x.shape)}, {rounds} interleaved rounds, torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads")
for label, timing in timings.items():
    print(f"  {label:<34} {timing.median_ms:8.1f} ms   eager / this {eager / timing.median_ms:.3f}x")
