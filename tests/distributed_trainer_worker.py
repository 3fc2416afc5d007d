"""The script tests/test_train_distributed.py launches with torchrun: two gloo processes train the same
small model (medkern modules inside) with the Trainer, each on its half of every batch, either wrapped
by the Trainer in DDP ("ddp") or sharded by the user with FSDP's fully_shard ("fsdp")."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import medkern
from medkern.train import Trainer
from medkern.train.distributed import full_state

SAMPLES, PER_PROCESS_BATCH, WORLD = 16, 2, 2
ACCUMULATE = 2  # groups of 2 batches: the first of each runs under DDP's no_sync


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 2, 6, 6, generator=g, dtype=torch.float64)
    return TensorDataset(x, torch.randn(SAMPLES, 1, generator=g, dtype=torch.float64))


def model(sharding: str = "ddp") -> nn.Module:
    torch.manual_seed(0)
    conv = medkern.nn.ConvAct(nn.Conv2d(2, 3, 3), "lrelu", 0.1)  # medkern modules inside DDP / FSDP
    head = medkern.nn.LinearAct(nn.Linear(3 * 16, 8), "tanh")
    net = nn.Sequential(conv, nn.Flatten(), head, nn.Linear(8, 1)).double()
    if sharding == "fsdp":
        fully_shard(net[0])  # a sharded submodule, then the root, as FSDP2 users shard
        fully_shard(net)
    return net


def trainer(sharding: str = "ddp", **options) -> Trainer:
    return Trainer(model(sharding), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), nn.MSELoss(),
                   progress=False, accumulate_grad_batches=ACCUMULATE, **options)


def main(out: str, checkpoint_dir: str, sharding: str) -> None:
    dist.init_process_group("gloo")  # torchrun's environment says who and where
    try:
        # DistributedSampler without shuffling: batch k of rank r holds samples r, r+2, ... of combined batch k
        def loader():
            return DataLoader(data(), batch_size=PER_PROCESS_BATCH, sampler=DistributedSampler(data(), shuffle=False))

        run = trainer(sharding, checkpoint_dir=checkpoint_dir)
        run.fit(loader(), epochs=1)
        resumed = trainer(sharding)
        resumed.fit(loader(), epochs=2, resume=f"{checkpoint_dir}/last.pt")
        # every process takes part in gathering the shards
        weights = full_state(resumed.model, None)[0] if sharding == "fsdp" else resumed.model.state_dict()
        if dist.get_rank() == 0:
            torch.save({"two_epochs": weights, "history": resumed.history}, out)
        dist.barrier()  # no process tears its gloo connections down while the other may still use them
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
    # Gloo's worker thread may still be releasing the last collective's work, whose tensors it
    # decrefs under the GIL; if the interpreter is finalizing by then, the thread is killed while
    # unwinding and the process aborts ("terminate called without an active exception"; a core
    # dump shows ProcessGroupGloo::runLoop in ~AsyncBarrierWork taking the GIL during Py_FinalizeEx).
    # The results are written and the group destroyed: leave without finalizing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
