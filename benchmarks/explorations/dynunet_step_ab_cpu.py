"""Exploration for issue 6 (not part of `medkern bench`): the MONAI DynUNet training step (the
model/dynunet_step case's model and input), eager against medkern.swap, interleaved in one process.

    python benchmarks/explorations/dynunet_step_ab_cpu.py

Prints the median of 6 interleaved steps of each and their ratio. Run it alternately against two
builds of medkern (PYTHONPATH) to tell a change's effect from the machine's drift.
"""

import time, statistics, torch, medkern
from monai.networks.nets import DynUNet
torch.manual_seed(0)
m = DynUNet(3, 1, 3, kernel_size=[3] * 5, strides=[1] + [2] * 4, upsample_kernel_size=[2] * 4,
            norm_name=("instance", {"affine": True}), act_name=("leakyrelu", {"negative_slope": 0.01}))
s = medkern.swap(m)
x = torch.randn(2, 1, 48, 48, 48)
def step(model):
    model.zero_grad(set_to_none=True); out = model(x); out.float().sum().backward()
for _ in range(2): step(m); step(s)
te, tm = [], []
for _ in range(6):
    t0 = time.perf_counter(); step(m); te.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); step(s); tm.append(time.perf_counter() - t0)
e, k = statistics.median(te) * 1e3, statistics.median(tm) * 1e3
print(f"{medkern.__file__.split('/medkern/')[0]} eager {e:.1f} medkern {k:.1f} ratio {e/k:.3f}")
