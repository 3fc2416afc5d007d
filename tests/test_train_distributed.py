"""medkern.train.Trainer under torchrun: two gloo processes on the CPU, each with half of every batch,
accumulating gradients over two batches, end with the same parameters as one process on the combined
batches, under DDP (the Trainer wraps the model) and under FSDP (the user shards it with fully_shard);
a checkpoint holds each process's random state and, for FSDP, the whole model and optimizer gathered
from the shards, and resumes on two processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from distributed_trainer_worker import PER_PROCESS_BATCH, WORLD, data, trainer
from medkern.train import load_checkpoint

WORKER = Path(__file__).with_name("distributed_trainer_worker.py")


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_gloo_processes_under_torchrun_train_like_one_on_the_combined_batch(tmp_path, sharding):
    out = tmp_path / "result.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
               str(WORKER), str(out), str(tmp_path / "ckpt"), sharding]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
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
    assert checkpoint["sharded"] == (["model"] if sharding == "fsdp" else [])
    for key, value in checkpoint["model"].items():  # whole tensors, not one process's shards
        assert type(value) is torch.Tensor and value.shape == single.model.state_dict()[key].shape, key
    if sharding == "fsdp":  # the optimizer's momentum, gathered and keyed by parameter name
        assert set(checkpoint["optimizer"]["state"]) == set(dict(single.model.named_parameters()))


def test_a_checkpoint_of_two_processes_does_not_resume_in_one(tmp_path):
    state = trainer(checkpoint_dir=tmp_path).state_dict()
    state["rng"] = state["rng"] * 2
    with pytest.raises(ValueError, match="made by 2 process"):
        trainer().load_checkpoint(state)


def test_a_checkpoint_of_a_sharded_model_does_not_resume_an_unsharded_one(tmp_path):
    state = trainer().state_dict()
    state["sharded"] = ["model"]
    with pytest.raises(ValueError, match=r"made with \['model'\] sharded by FSDP, this run shards none"):
        trainer().load_checkpoint(state)
