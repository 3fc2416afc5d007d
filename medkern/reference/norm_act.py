"""norm_act in plain PyTorch: normalization (batch, instance, group) + affine + activation.

``norm_act`` is the oracle: torch's own functional norms followed by the activation, so running
statistics are updated exactly as torch does. The rest states the memory-saving backward the
fused kernels implement (issue: CNN layers), as the InPlace-ABN paper does: for an activation
that is invertible, only the output y and the per-group 1/std are kept, and the backward
recovers what it needs from them:

    pre = act^-1(y),  dpre = dy * act'(pre)  (act' written in terms of y)
    xhat = (pre - beta) / gamma
    dbeta_c  = sum_c dpre
    dgamma_c = sum_c dpre * xhat
    dxhat    = dpre * gamma
    dx = rstd * (dxhat - mean_g(dxhat) - xhat * mean_g(dxhat * xhat))   (batch statistics)
    dx = rstd * dxhat                                                   (running statistics)

where sum_c runs over a channel's elements and mean_g over a statistics group's (a channel
for batch norm; a (sample, channel) for instance norm; a (sample, group of channels) for group
norm). The division by gamma is the price: the recovered xhat carries the rounding error of
pre amplified by 1/|gamma|, and a channel with gamma == 0 cannot be recovered at all, so the
kernels must keep xhat instead when a gamma is (near) zero.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .activations import activation
from .bias_act import broadcast_along

KINDS = ("batch", "instance", "group")


def norm_act(
    x: torch.Tensor,
    kind: str,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    running_mean: Optional[torch.Tensor] = None,
    running_var: Optional[torch.Tensor] = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    act: str = "relu",
    alpha: float = 0.0,
    num_groups: Optional[int] = None,
) -> torch.Tensor:
    """act(norm(x) * weight + bias), norm as torch's functional op of that kind computes it.

    Batch statistics are used when ``training`` or when there are no running statistics (as
    torch.nn.BatchNorm/InstanceNorm do); running statistics are then updated in place.
    """
    if kind == "batch":
        use_batch_stats = training or running_mean is None
        z = F.batch_norm(x, running_mean, running_var, weight, bias, use_batch_stats, momentum, eps)
    elif kind == "instance":
        use_input_stats = training or running_mean is None
        z = F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
    elif kind == "group":
        z = F.group_norm(x, num_groups, weight, bias, eps)
    else:
        raise ValueError(f"unknown norm kind {kind!r}; expected one of {KINDS}")
    return activation(z, act, alpha)


def invertible(act: str, alpha: float) -> bool:
    """Whether y = act(pre) determines pre (and act'(pre)), so that y alone can be kept."""
    return act == "linear" or (act in ("lrelu", "elu") and alpha > 0)


def inverse_activation(y: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    if act == "linear":
        return y
    if act == "lrelu":
        return torch.where(y >= 0, y, y / alpha)
    if act == "elu":
        return torch.where(y > 0, y, torch.log1p(y / alpha))
    raise ValueError(f"activation {act!r} (alpha={alpha}) is not invertible")


def derivative_from_output(y: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    """act'(pre) in terms of y = act(pre), with torch's one-sided values at the kinks."""
    if act == "linear":
        return torch.ones_like(y)
    if act == "lrelu":  # torch: pre > 0 ? 1 : alpha, and pre > 0 exactly where y > 0
        return torch.where(y > 0, torch.ones_like(y), torch.full_like(y, alpha))
    if act == "elu":  # pre <= 0: alpha * exp(pre) = y + alpha
        return torch.where(y > 0, torch.ones_like(y), y + alpha)
    raise ValueError(f"activation {act!r} (alpha={alpha}) is not invertible")


def group_view(t: torch.Tensor, kind: str, num_groups: Optional[int]) -> torch.Tensor:
    """``t`` (N, C, *S) as (groups, elements of a group) for ``kind``'s statistics: a view of a
    contiguous t's data for instance and group norm; a permuted copy for batch norm."""
    n, c = t.shape[:2]
    if kind == "batch":
        return t.transpose(0, 1).reshape(c, -1)
    if kind == "instance":
        return t.reshape(n * c, -1)
    return t.reshape(n * num_groups, -1)


def batch_rstd(x: torch.Tensor, kind: str, num_groups: Optional[int], eps: float) -> torch.Tensor:
    """1 / sqrt(biased variance + eps) per statistics group, flat (see ``group_view``)."""
    groups = group_view(x, kind, num_groups)
    return torch.rsqrt(groups.var(dim=1, unbiased=False) + eps)


def _per_channel(values: Optional[torch.Tensor], like: torch.Tensor, fill: float) -> torch.Tensor:
    """``values`` (one per channel, or ``fill`` if None) broadcasting along dim 1 of ``like``."""
    if values is None:
        values = torch.full((like.shape[1],), fill, dtype=like.dtype, device=like.device)
    return broadcast_along(values, like.dim(), 1)


def norm_act_backward_from_output(
    grad: torch.Tensor,
    y: torch.Tensor,
    rstd: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    kind: str,
    act: str,
    alpha: float,
    num_groups: Optional[int] = None,
    batch_stats: bool = True,
):
    """(dx, dweight, dbias) of ``norm_act`` from its output y and the per-group ``rstd`` only.

    ``rstd`` is flat per statistics group (``batch_rstd``) with batch statistics, or per channel
    (1 / sqrt(running_var + eps)) with running statistics. dweight/dbias are None without
    weight/bias.
    """
    gamma = _per_channel(weight, y, 1.0)
    beta = _per_channel(bias, y, 0.0)
    pre = inverse_activation(y, act, alpha)
    dpre = grad * derivative_from_output(y, act, alpha)
    xhat = (pre - beta) / gamma
    channel_dims = [0] + list(range(2, y.dim()))
    dbias = dpre.sum(channel_dims) if bias is not None else None
    dweight = (dpre * xhat).sum(channel_dims) if weight is not None else None
    dxhat = dpre * gamma
    if not batch_stats:
        return dxhat * _per_channel(rstd, y, 1.0), dweight, dbias
    dxhat_g = group_view(dxhat, kind, num_groups)
    xhat_g = group_view(xhat, kind, num_groups)
    dx_g = rstd[:, None] * (
        dxhat_g - dxhat_g.mean(1, keepdim=True) - xhat_g * (dxhat_g * xhat_g).mean(1, keepdim=True)
    )
    if kind == "batch":
        dx = dx_g.reshape(y.shape[1], y.shape[0], *y.shape[2:]).transpose(0, 1)
    else:
        dx = dx_g.reshape(y.shape)
    return dx, dweight, dbias


def running_rstd(running_var: torch.Tensor, eps: float) -> torch.Tensor:
    return 1.0 / torch.sqrt(running_var + eps)


__all__ = [
    "KINDS",
    "norm_act",
    "invertible",
    "inverse_activation",
    "derivative_from_output",
    "batch_rstd",
    "running_rstd",
    "norm_act_backward_from_output",
]
