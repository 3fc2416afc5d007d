"""medkern.ops.norm_act: normalization (batch, instance, group) + affine + activation, fused.

    y = act((x - mean) / sqrt(var + eps) * weight + bias)

with mean and var over each statistics group (batch norm: a channel over the batch; instance
norm: a (sample, channel); group norm: a (sample, group of channels)), or the running statistics
in eval mode, which training updates in place exactly as torch's functional norms do.

Memory: autograd keeps one tensor the size of x, never two. For activations whose output
determines their input stably (linear; lrelu with alpha > 0) it keeps the output y, which
the next layer keeps anyway, and recovers the normalized input from it in the backward
(InPlace-ABN; formulas in medkern/reference/norm_act.py); for the others it keeps x. Recovery
divides by weight, so y is kept only while every channel's |weight| is at least
``1 / RECOVERY_MAX_SHIFT`` of its |bias| (else the recovered values would lose digits), and
not when ``memory_saving=False`` (which second-order gradients need).

The backend picks the implementation: ``medkern::norm_act`` (CPU and CUDA kernels), the
Triton op ``medkern::triton_norm_act``, or the reference (torch's functional norms).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .. import _extension, activations, backend
from .._args import check_companion, check_float_tensor
from ..reference.norm_act import KINDS, invertible
from ..reference.norm_act import norm_act as reference_norm_act

OP = "medkern.ops.norm_act"

# Activations for which y is kept. ELU is invertible too, but not usefully: where it saturates
# (z << 0) y rounds to -alpha and log1p(y / alpha) loses every digit (-inf at the limit), so the
# gradient would be wrong or NaN; ELU keeps x. The kernels still accept ELU from the output.
MEMORY_SAVING_ACTS = ("linear", "lrelu")

# y is kept for backward only where |bias| <= RECOVERY_MAX_SHIFT * |weight| in every channel:
# recovering xhat = (z - bias) / weight then costs at most log2(1 + 16) ~ 4 bits.
RECOVERY_MAX_SHIFT = 16.0


def check_channel_vector(op: str, name: str, t, x: torch.Tensor) -> None:
    """An optional per-channel vector (weight, bias, running statistics) of x: C elements."""
    if not check_companion(op, name, t, x, "x", allow_float32=True):
        return
    if t.dim() != 1 or t.shape[0] != x.shape[1]:
        raise ValueError(f"{op}: {name} must be 1-d with x.shape[1] = {x.shape[1]} elements, got shape {tuple(t.shape)}")


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{OP}: {name} must be a finite real number, got {value!r}")
    return float(value)


def check_args(x, kind, weight, bias, running_mean, running_var, training, momentum, eps, act, alpha, num_groups):
    """Checks every argument; returns (act, alpha, groups, batch_stats, momentum)."""
    check_float_tensor(OP, "x", x)
    if x.dim() < 2:
        raise ValueError(f"{OP}: x must be (N, C, *spatial) with at least 2 dims, got shape {tuple(x.shape)}")
    if kind not in KINDS:
        raise ValueError(f"{OP}: unknown kind={kind!r}; expected one of {', '.join(KINDS)}")
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        check_channel_vector(OP, name, t, x)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{OP}: running_mean and running_var must be given together")
    if kind == "group":
        if running_mean is not None:
            raise ValueError(f"{OP}: group norm keeps no running statistics; pass running_mean=running_var=None")
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or x.shape[1] % num_groups:
            raise ValueError(f"{OP}: num_groups must be a positive int dividing the {x.shape[1]} channels, got {num_groups!r}")
    elif num_groups is not None:
        raise ValueError(f"{OP}: num_groups is for kind='group' only, got {num_groups!r} with kind={kind!r}")
    momentum = _real(momentum, "momentum")
    if eps is None or _real(eps, "eps") < 0:
        raise ValueError(f"{OP}: eps must be >= 0, got {eps!r}")
    spec = activations.get(act, OP)
    alpha = activations.resolve_alpha(spec, alpha, OP)
    batch_stats = kind == "group" or training or running_mean is None
    # torch's checks, empty inputs included: a single value per statistics group (batch, instance)
    # and an empty spatial size (group) are errors
    spatial = math.prod(x.shape[2:])
    if batch_stats and kind != "group" and spatial * (x.shape[0] if kind == "batch" else 1) == 1:
        what = "value per channel" if kind == "batch" else "spatial element"
        raise ValueError(f"{OP}: expected more than 1 {what} when using batch statistics, got input shape {tuple(x.shape)}")
    if kind == "group" and spatial == 0:
        raise ValueError(f"{OP}: group norm needs a non-empty spatial size, got input shape {tuple(x.shape)}")
    return spec.name, alpha, (num_groups if kind == "group" else 1), batch_stats, momentum


def _recoverable(weight: Optional[torch.Tensor], bias: Optional[torch.Tensor]) -> bool:
    """Whether xhat can be recovered from y accurately in every channel (see RECOVERY_MAX_SHIFT)."""
    if weight is None:
        return True
    scale = weight.detach().abs().float()
    shift = torch.zeros_like(scale) if bias is None else bias.detach().abs().float()
    return bool(((scale > 0) & (shift <= RECOVERY_MAX_SHIFT * scale)).all())


def keeps_output(act: str, alpha: float, weight, bias, memory_saving: bool = True) -> bool:
    """Whether backward will keep y (not x): the memory-saving mode, where it is exact enough.

    Under torch.compile x is kept: the weight check would be a data-dependent branch. On CUDA
    the check reads C values back to the host (one synchronization per forward).
    """
    if not memory_saving or act not in MEMORY_SAVING_ACTS or not invertible(act, alpha):
        return False
    if torch.compiler.is_compiling():
        return False
    return _recoverable(weight, bias)


def update_running_stats(kind, x, mean, var, running_mean, running_var, momentum) -> None:
    """running = (1 - momentum) * running + momentum * batch value (unbiased var), as torch does;
    instance norm averages its per-sample statistics over the batch first."""
    n, c = x.shape[:2]
    count = x.numel() // c if kind == "batch" else x.numel() // (n * c)
    unbiased = var * (count / max(count - 1, 1))
    if kind == "instance":
        mean, unbiased = mean.view(n, c).mean(0), unbiased.view(n, c).mean(0)
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


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
    alpha: Optional[float] = None,
    num_groups: Optional[int] = None,
    memory_saving: bool = True,
) -> torch.Tensor:
    """``act(norm(x) * weight + bias)`` as torch's functional ``kind`` norm then the activation.

    Args:
        x: (N, C, *spatial) float32/float64/float16/bfloat16, any layout (contiguous and
            channels_last are walked in place; others are copied once).
        kind: ``"batch"``, ``"instance"`` or ``"group"``.
        weight, bias: optional per-channel affine parameters (x's dtype, or float32 for half x).
        running_mean, running_var: batch/instance norm's running statistics, updated in place
            when training; used instead of batch statistics when not training.
        training, momentum, eps: as torch's functional norms take them.
        act, alpha: an activation of ``medkern.activations`` and its parameter.
        num_groups: group norm's number of groups (must divide C).
        memory_saving: keep y instead of x for backward where possible (see the module doc);
            pass False for second-order gradients.

    Returns y with x's shape, dtype and (contiguous or channels_last) layout.
    """
    act, alpha, groups, batch_stats, momentum = check_args(
        x, kind, weight, bias, running_mean, running_var, training, momentum, eps, act, alpha, num_groups
    )
    chosen = backend.select("norm_act", x.device)
    if chosen == "reference":
        return reference_norm_act(x, kind, weight, bias, running_mean, running_var, training, momentum, eps, act,
                                  alpha, num_groups)
    backend.check_traceable(OP, chosen, x.device)
    keep = keeps_output(act, alpha, weight, bias, memory_saving)
    y, mean, var = _kernel_op(chosen)(x, kind, weight, bias, running_mean, running_var, batch_stats, float(eps), act,
                                     alpha, groups, keep)
    if batch_stats and running_mean is not None and x.numel() > 0:
        update_running_stats(kind, x, mean, var, running_mean, running_var, momentum)
    return y


def _kernel_op(chosen: str):
    if chosen == "triton":
        from ..triton import norm_act as triton_norm_act

        return triton_norm_act.forward_op()
    return torch.ops.medkern.norm_act.default


def register_autograd(forward_name: str, backward_name: str) -> None:
    """Makes op ``forward_name`` differentiable through ``backward_name`` ("medkern::op" names),
    and that op differentiable again (register_backward_autograd).

    mean and var (the op's 2nd and 3rd outputs) are statistics for backward and for updating
    running statistics, not differentiable. The C++ op medkern::norm_act has this autograd in C++
    (csrc/norm_act_autograd.cpp: a Python autograd function costs more than a small layer's
    kernels); the Triton op takes it from here.
    """
    backward_op = getattr(torch.ops.medkern, backward_name.split("::")[1]).default

    def setup_forward(ctx, inputs, output):
        x, kind, weight, bias, running_mean, running_var, batch_stats, eps, act, alpha, groups, keep = inputs
        y, mean, var = output
        ctx.mark_non_differentiable(mean, var)
        ctx.save_for_backward(y if keep else x, mean, var, weight, bias)
        ctx.params = (kind, batch_stats, eps, act, alpha, groups)
        ctx.keep = keep

    def forward_backward(ctx, grad, _grad_mean, _grad_var):
        saved, mean, var, weight, bias = ctx.saved_tensors
        need_x, _, need_w, need_b = ctx.needs_input_grad[:4]
        mask = [need_x, need_w and weight is not None, need_b and bias is not None]
        dx, dw, db = backward_op(grad, saved, ctx.keep, mean, var, weight, bias, *ctx.params, mask)
        return (dx if mask[0] else None, None, dw if mask[1] else None, db if mask[2] else None) + (None,) * 8

    torch.library.register_autograd(forward_name, forward_backward, setup_context=setup_forward)
    register_backward_autograd(backward_name)


def register_backward_autograd(backward_name: str) -> None:
    """Makes the backward op ``backward_name`` differentiable: second-order gradients run through
    the reference (exact, from x), so they need x kept (memory_saving=False)."""

    def setup_backward(ctx, inputs, output):
        grad, saved, saved_is_output, mean, var, weight, bias, *params, mask = inputs
        ctx.save_for_backward(grad, saved, mean, var, weight, bias)
        ctx.saved_is_output, ctx.params = saved_is_output, params

    def backward_backward(ctx, grad_dx, grad_dw, grad_db):
        if ctx.saved_is_output:
            raise RuntimeError(
                f"{OP}: second-order gradients need x, but this call kept only its output to save "
                "memory; call norm_act with memory_saving=False (modules: memory_saving=False)"
            )
        grad, x, mean, var, weight, bias = ctx.saved_tensors
        kind, batch_stats, eps, act, alpha, groups = ctx.params
        leaves = [t.detach().requires_grad_() if t is not None else None for t in (grad, x, weight, bias)]
        g_, x_, w_, b_ = leaves
        asked = [(leaf, up) for leaf, up in zip((x_, w_, b_), (grad_dx, grad_dw, grad_db))
                 if leaf is not None and up is not None and up.shape == leaf.shape]
        if not asked:
            return (None,) * 14
        with torch.enable_grad():
            stats = (None, None) if batch_stats else (mean.to(x.dtype), var.to(x.dtype))
            y = reference_norm_act(x_, kind, w_, b_, *stats, batch_stats, 0.0, eps, act, alpha,
                                   groups if kind == "group" else None)
            firsts = torch.autograd.grad(y, [leaf for leaf, _ in asked], g_, create_graph=True)
            inputs = [t for t in leaves if t is not None]
            seconds = iter(torch.autograd.grad(firsts, inputs, [up for _, up in asked], allow_unused=True))
        d_grad, d_x, d_w, d_b = (next(seconds) if t is not None else None for t in leaves)
        return (d_grad, d_x, None, None, None, d_w, d_b) + (None,) * 7

    torch.library.register_autograd(backward_name, backward_backward, setup_context=setup_backward)


def _stat_count(x: torch.Tensor, kind: str, batch_stats: bool, groups: int) -> int:
    n, c = x.shape[:2]
    if not batch_stats or kind == "batch":
        return c
    return n * (c if kind == "instance" else groups)


def fake_forward(x, kind, weight, bias, running_mean, running_var, batch_stats, eps, act, alpha, groups, keep):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    count = _stat_count(x, kind, batch_stats, groups)
    # the kernels write y contiguous or channels_last-like (as x is), else contiguous
    rows = x.movedim(1, -1).is_contiguous()
    like = x if x.is_contiguous() or rows else x.contiguous()
    return torch.empty_like(like), x.new_empty((count,), dtype=acc), x.new_empty((count,), dtype=acc)


def fake_backward(grad, saved, saved_is_output, mean, var, weight, bias, kind, batch_stats, eps, act, alpha, groups,
                  mask):
    like = saved if saved.is_contiguous() or saved.movedim(1, -1).is_contiguous() else saved.contiguous()
    dx = torch.empty_like(like) if mask[0] else saved.new_empty((0,))
    dw = weight.new_empty(weight.shape) if mask[1] and weight is not None else saved.new_empty((0,))
    db = bias.new_empty(bias.shape) if mask[2] and bias is not None else saved.new_empty((0,))
    return dx, dw, db


def _register_compiled_ops() -> None:
    if not _extension.loaded():
        return
    torch.library.register_fake("medkern::norm_act")(fake_forward)
    torch.library.register_fake("medkern::norm_act_backward")(fake_backward)
    if torch._C._dispatch_has_kernel_for_dispatch_key("medkern::norm_act", "Autograd"):
        register_backward_autograd("medkern::norm_act_backward")  # the forward's is in C++
    else:  # a _C built before csrc/norm_act_autograd.cpp
        register_autograd("medkern::norm_act", "medkern::norm_act_backward")


_register_compiled_ops()
