"""What the training loops need from torch.distributed: who we are, and summing across processes.

Under ``torchrun`` (or any initialized process group with more than one process) the loops wrap
the model in DistributedDataParallel, sum the epoch's running losses over processes so every
process logs the same row, write checkpoints from rank 0 only, and keep each process's random
state in the checkpoint so that a resume is exact on every rank. A model the user sharded with
FSDP (``fully_shard`` or FullyShardedDataParallel) is checkpointed whole: its and its optimizer's
shards are gathered into full state dicts (torch.distributed.checkpoint), which load back into
the same sharding.
"""

from __future__ import annotations

from typing import Optional

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


def _fsdp_kinds() -> tuple:
    from torch.distributed import fsdp

    return tuple(getattr(fsdp, name) for name in ("FullyShardedDataParallel", "FSDPModule") if hasattr(fsdp, name))


def is_sharded(model: nn.Module) -> bool:
    """Some of ``model`` is sharded by FSDP: its own state_dict would hold this process's shards only."""
    if not dist.is_available():
        return False
    kinds = _fsdp_kinds()
    return bool(kinds) and any(isinstance(m, kinds) for m in model.modules())


def full_state(model: nn.Module, optimizer) -> tuple[dict, Optional[dict]]:
    """The whole state of a sharded ``model`` and of its ``optimizer`` (or None), gathered from every
    process's shards into CPU memory on rank 0 (the process that writes checkpoints; the others get
    empty dicts): torch.distributed.checkpoint's full state dicts, keyed by parameter name (the
    optimizer's too). Every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        return get_model_state_dict(model, options=options), None
    return get_state_dict(model, optimizer, options=options)


def load_full_state(model: nn.Module, optimizer, model_state: dict, optimizer_state: Optional[dict]) -> None:
    """Puts full state dicts (``full_state``'s) back into a sharded model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    options = StateDictOptions(full_state_dict=True)
    if optimizer is None:
        set_model_state_dict(model, model_state, options=options)
    else:
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                       options=options)


def _already_parallel(model: nn.Module) -> bool:
    """Wrapped in DDP, or (some of it) sharded with FSDP or fully_shard, by the user."""
    return isinstance(model, nn.parallel.DistributedDataParallel) or is_sharded(model)


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
