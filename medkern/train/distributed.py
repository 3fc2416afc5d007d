"""What the training loops need from torch.distributed: who we are, and summing across processes.

Under ``torchrun`` (or any initialized process group with more than one process) the loops wrap
the model in DistributedDataParallel, sum the epoch's running losses over processes so every
process logs the same row, write checkpoints from rank 0 only, and keep each process's random
state in the checkpoint so that a resume is exact on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def gather(value) -> list:
    """``value`` from every process, in rank order (a one-element list when not distributed)."""
    if not is_distributed():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast(value):
    """Rank 0's ``value`` on every process (``value`` itself when not distributed)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def sum_over_processes(sums: dict[str, list[float]]) -> dict[str, list[float]]:
    """name -> [sum, count], summed over every process (names in a fixed order on all ranks)."""
    if not is_distributed():
        return sums
    names = sorted(set().union(*gather(sorted(sums))))
    totals = torch.tensor([sums.get(name, [0.0, 0]) for name in names], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        totals = totals.cuda()
    dist.all_reduce(totals)
    return {name: [s, int(n)] for name, (s, n) in zip(names, totals.tolist())}


def _already_parallel(model: nn.Module) -> bool:
    """Wrapped in DDP or FSDP, or sharded with fully_shard, by the user."""
    from torch.distributed import fsdp

    kinds = [nn.parallel.DistributedDataParallel]
    kinds += [getattr(fsdp, name) for name in ("FullyShardedDataParallel", "FSDPModule") if hasattr(fsdp, name)]
    return isinstance(model, tuple(kinds))


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed (unless the user already made it
    parallel, e.g. with FSDP), else the model itself."""
    if not is_distributed() or _already_parallel(model):
        return model
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def uses_distributed_sampler(loader) -> bool:
    return isinstance(getattr(loader, "sampler", None), torch.utils.data.distributed.DistributedSampler)
