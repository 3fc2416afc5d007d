"""medkern.train.Trainer under DistributedDataParallel: two gloo processes on the CPU, each with half
of every batch, accumulating gradients over two batches, end with the same parameters as one process
on the combined batches; a checkpoint holds each process's random state and resumes on two processes."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import medkern
from medkern.train import Trainer, load_checkpoint

SAMPLES, PER_PROCESS_BATCH, WORLD = 16, 2, 2
ACCUMULATE = 2  # groups of 2 batches: the first of each runs under DDP's no_sync


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 2, 6, 6, generator=g, dtype=torch.float64)
    return TensorDataset(x, torch.randn(SAMPLES, 1, generator=g, dtype=torch.float64))


def model():
    torch.manual_seed(0)
    conv = medkern.nn.ConvAct(nn.Conv2d(2, 3, 3), "lrelu", 0.1)  # medkern modules inside DDP
    head = medkern.nn.LinearAct(nn.Linear(3 * 16, 8), "tanh")
    return nn.Sequential(conv, nn.Flatten(), head, nn.Linear(8, 1)).double()


def trainer(**options):
    return Trainer(model(), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), nn.MSELoss(), progress=False,
                   accumulate_grad_batches=ACCUMULATE, **options)


def _worker(rank: int, rendezvous: str, out: str, checkpoint_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    try:
        # DistributedSampler without shuffling: batch k of rank r is samples r, r+2, ... of combined batch k
        def loader():
            return DataLoader(data(), batch_size=PER_PROCESS_BATCH, sampler=DistributedSampler(data(), shuffle=False))

        run = trainer(checkpoint_dir=checkpoint_dir)
        run.fit(loader(), epochs=1)
        resumed = trainer()
        resumed.fit(loader(), epochs=2, resume=f"{checkpoint_dir}/last.pt")
        if rank == 0:
            torch.save({"one_epoch": run.model.state_dict(), "two_epochs": resumed.model.state_dict(),
                        "history": resumed.history}, out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_train_like_one_on_the_combined_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(out), str(tmp_path / "ckpt")), nprocs=WORLD)
    result = torch.load(out)

    single = trainer()
    history = single.fit(DataLoader(data(), batch_size=PER_PROCESS_BATCH * WORLD), epochs=2)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(result["two_epochs"][key], value, rtol=1e-12, atol=1e-13, msg=key)
    # the logged loss is the mean over both processes' samples, as the single process logs it
    for distributed_row, single_row in zip(result["history"], history):
        assert distributed_row["train_loss"] == pytest.approx(single_row["train_loss"], rel=1e-12)
    checkpoint = load_checkpoint(tmp_path / "ckpt" / "last.pt")
    assert len(checkpoint["rng"]) == WORLD  # each process's generators, to resume each exactly
    assert list(checkpoint["model"]) == list(single.model.state_dict())  # no "module." prefix from DDP


def test_a_checkpoint_of_two_processes_does_not_resume_in_one(tmp_path):
    state = trainer(checkpoint_dir=tmp_path).state_dict()
    state["rng"] = state["rng"] * 2
    with pytest.raises(ValueError, match="made by 2 process"):
        trainer().load_checkpoint(state)
