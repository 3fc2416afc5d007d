"""Exploration for issue 6 (not part of `medkern bench`): what ResNet-18's 20 norm layers cost on
the CPU, medkern against torch, at batch 16 x 3 x 128 x 128 (the model/resnet18_step case).

    python benchmarks/explorations/resnet18_norm_layers_cpu.py

Two measures, each summed over the 20 layers (medians of 30 calls after 5 warm-up calls):
- training call: module forward + torch.autograd.grad to the input and parameters, torch's
  BatchNorm2d -> ReLU against medkern.nn.NormAct made from them (interleaved per layer);
- the ops alone, no autograd: medkern::norm_act and medkern::norm_act_backward, next to a
  copy-speed yardstick on the same tensors (x.clone(): one read, one write). A fused batch-norm
  training step reads x twice and writes y (forward; the statistics pass's second read of a
  segment is from cache), then reads the gradient and x twice and writes dx (backward): eight
  passes over an activation, four clones' worth, the least the norms can cost.
"""

import statistics
import time

import torch
from torchvision.models import resnet18

import medkern


def median_ms(fn, rounds=30):
    for _ in range(5):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def norm_shapes():
    shapes, model = [], resnet18(num_classes=10)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(lambda mod, inputs, output: shapes.append(tuple(output.shape)))
    with torch.no_grad():
        model(torch.randn(16, 3, 128, 128))
    return shapes


def training_calls(shapes):
    total = {"torch": 0.0, "medkern": 0.0}
    for shape in shapes:
        x, g = torch.randn(shape, requires_grad=True), torch.randn(shape)
        pair = torch.nn.Sequential(torch.nn.BatchNorm2d(shape[1]), torch.nn.ReLU())
        fused = medkern.nn.NormAct.from_torch(pair[0], pair[1])
        for name, module in (("torch", pair), ("medkern", fused)):
            total[name] += median_ms(lambda: torch.autograd.grad(module(x), (x, *module.parameters()), g))
    return total


def ops_alone(shapes):
    forward, backward = torch.ops.medkern.norm_act.default, torch.ops.medkern.norm_act_backward.default
    total = dict.fromkeys(("norm_act", "norm_act_backward", "clone"), 0.0)
    with torch.no_grad():
        for shape in shapes:
            x, g, c = torch.randn(shape), torch.randn(shape), shape[1]
            w, b, rm, rv = torch.rand(c) + 0.5, torch.randn(c) * 0.1, torch.zeros(c), torch.ones(c)
            args = ("batch", w, b, rm, rv, True, 1e-5, "relu", 0.0, 1)
            _, mean, var = forward(x, *args, False)
            total["norm_act"] += median_ms(lambda: forward(x, *args, False))
            total["norm_act_backward"] += median_ms(
                lambda: backward(g, x, False, mean, var, w, b, "batch", True, 1e-5, "relu", 0.0, 1, [True] * 3))
            total["clone"] += median_ms(lambda: x.clone())
    return total


def main():
    shapes = norm_shapes()
    mib = sum(torch.Size(s).numel() for s in shapes) * 4 / 2**20
    print(f"{len(shapes)} norm layers, {mib:.1f} MiB of activations (float32)")
    calls = training_calls(shapes)
    print(f"training calls (ms, summed): torch {calls['torch']:.2f}, medkern {calls['medkern']:.2f} "
          f"({calls['torch'] / calls['medkern']:.2f}x)")
    ops = ops_alone(shapes)
    print("ops alone (ms, summed): " + ", ".join(f"{k} {v:.2f}" for k, v in ops.items()))
    print(f"four clones (the traffic at copy speed): {4 * ops['clone']:.2f} ms; "
          f"medkern's ops: {ops['norm_act'] + ops['norm_act_backward']:.2f} ms")


if __name__ == "__main__":
    main()
