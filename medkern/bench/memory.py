"""Memory a contender costs: bytes saved for backward (any device) and peak allocated (CUDA)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch


def saved_tensor_bytes(forward: Callable[[], Any], exclude: tuple[torch.Tensor, ...] = ()) -> int:
    """Bytes of the storages autograd keeps for backward when ``forward()`` runs.

    Exact and device-independent: every tensor saved for backward passes through the pack
    hook. A storage saved several times (``x * x``, or a view and its base) counts once, and
    counts whole, since saving any view of it keeps all of it alive. Storages of ``exclude``
    (the inputs, which the caller keeps alive anyway) are not counted.
    """
    storages: dict[int, int] = {}
    excluded = {t.untyped_storage().data_ptr() for t in exclude}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        # The outputs (and through them the saved tensors) stay alive until the sum below, so
        # no storage is freed and its address reused for another while we count.
        outputs = forward()  # noqa: F841
        return sum(storages.values())


def peak_allocated_bytes(run: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Peak bytes allocated on a CUDA device while ``run()`` runs, above what was allocated
    before it; None on other devices (the CPU allocator keeps no such count)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
