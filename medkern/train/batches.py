"""What a batch holds: the model's inputs and the target, moved to the training device."""

from __future__ import annotations

import torch

from ..layout import to_channels_last

_OP = "medkern.train"


def default_unpack(batch):
    """(args, kwargs, target) from a tensor or a 1-sequence (inputs only), a ``(*inputs, target)``
    sequence, or a dict."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}, None
    if isinstance(batch, dict):
        if "input" not in batch:
            raise ValueError(f"{_OP}: a dict batch needs an 'input' key, got keys {sorted(batch)}")
        extra = {k: v for k, v in batch.items() if k not in ("input", "target")}
        return (batch["input"],), extra, batch.get("target")
    if isinstance(batch, (tuple, list)) and len(batch) == 1:  # e.g. TensorDataset(x): inputs only
        return (batch[0],), {}, None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return tuple(batch[:-1]), {}, batch[-1]
    raise TypeError(f"{_OP}: a batch must be a tensor, a (*inputs, target) tuple or list, or a dict with "
                    f"'input' and 'target'; got {type(batch).__name__} (pass unpack= for other layouts)")


def primary_output(output):
    """The output metrics and predictions use: the first of a deep-supervision list."""
    return output[0] if isinstance(output, (list, tuple)) else output


def to_device(value, device: torch.device, channels_last: bool):
    if isinstance(value, torch.Tensor):
        value = value.to(device, non_blocking=True)
        return to_channels_last(value) if channels_last and value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device, channels_last) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device, channels_last) for k, v in value.items()}
    return value


def batch_size(target, args) -> int:
    for value in (target, *args):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1
