"""norm_act in Triton: ops ``medkern::triton_norm_act`` and ``medkern::triton_norm_act_backward``.

Same schemas and semantics as the C++ ops (csrc/medkern.cpp, csrc/norm_act_op.cpp) and the same
autograd (medkern.ops.norm_act.register_autograd). As in C++, four streaming kernels make the
passes over the data, with the per-element math of csrc/common/norm_act.h:

    moments_kernel      per (n, c, segment): the mean and the squared deviations from it
    forward_kernel      y = act(x * scale + shift)
    grad_sums_kernel    per (n, c, segment): the sums of dpre and of dpre * xhat
    grad_input_kernel   dx = k1 * dpre + k2 * xhat + k3

and everything per channel or statistics group (combining partial sums, the per-(n, c) tables
scale, shift, xs, xo, k1, k2, k3) is small torch work in float64 here.

A program takes one segment of one sample's positions for a block of BLOCK_C channels, walked
in tiles of BLOCK_P positions x BLOCK_C channels: in the planar layout ([N, C, S], contiguous)
a tile is BLOCK_C contiguous runs, in the interleaved one ([N, S, C], channels_last) BLOCK_P
rows of contiguous channels. The layout is a constexpr, so a program loads its table entries
once. Segments split the positions as the C++ kernels do, so partial sums cover the same
elements and the results do not depend on the launch.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from .. import activations
from .._args import check_float_tensor
from ..ops.norm_act import check_channel_vector, register_autograd
from ..reference.norm_act import KINDS
from .activations import (
    RECOVERABLE_FROM_OUTPUT,
    activation,
    activation_derivative_from_output,
    activation_inverse,
    exact,
    fits_float32,
    split,
)

SEGMENT = 4096  # elements' worth of positions per segment: kNormSegment of csrc/common/norm_act.h
# (BLOCK_P, BLOCK_C) by layout (interleaved or not): 1024 elements whose contiguous runs are
# long enough to coalesce. Several channels per program keep small planes from leaving a
# program mostly masked (and the interpreter from running one program per plane).
TILES = {False: (128, 8), True: (16, 64)}
NUM_WARPS = 4


@triton.jit
def _segment(C, S, segment, K, BLOCK_C: tl.constexpr):
    """This program's sample n, channels ch, its segment's positions [start, end) and segment index k."""
    blocks = tl.cdiv(C, BLOCK_C)
    pid = tl.program_id(0)
    task = pid // blocks
    ch = (pid % blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    k = task % K
    start = k * segment
    return (task // K).to(tl.int64), ch, start, tl.minimum(start + segment, S), k


@triton.jit
def _tile(n, ch, p0, end, C, S, INTERLEAVED: tl.constexpr, BLOCK_P: tl.constexpr):
    """Offsets and mask of the tile at positions [p0, p0 + BLOCK_P) (rows) x channels ch (columns)."""
    p = p0 + tl.arange(0, BLOCK_P)[:, None]
    c = ch[None, :]
    if INTERLEAVED:
        offsets = (n * S + p) * C + c
    else:
        offsets = (n * C + c) * S + p
    return offsets, (p < end) & (c < C)


@triton.jit
def _per_channel(table_ptr, n, ch, C):
    """The program's entries of an [N * C] table, as a row that broadcasts over positions."""
    return tl.load(table_ptr + n * C + ch, mask=ch < C, other=0)[None, :]


@triton.jit
def _store_partial(out_ptr, value, n, ch, k, C, K):
    """Stores a per-channel partial sum at [n, ch, k] of an [N, C, K] tensor."""
    tl.store(out_ptr + (n * C + ch) * K + k, value, mask=ch < C)


@triton.jit
def moments_kernel(
    x_ptr,
    mean_ptr,
    m2_ptr,
    C,
    S,
    segment,
    K,
    INTERLEAVED: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per (n, c, segment): the mean, then the squared deviations from it in a second pass over
    the segment (exact for any offset, unlike a sum of squares)."""
    n, ch, start, end, k = _segment(C, S, segment, K, BLOCK_C)
    acc = tl.zeros([BLOCK_P, BLOCK_C], mean_ptr.dtype.element_ty)
    for p0 in range(start, end, BLOCK_P):
        offsets, mask = _tile(n, ch, p0, end, C, S, INTERLEAVED, BLOCK_P)
        acc += tl.load(x_ptr + offsets, mask=mask, other=0).to(acc.dtype)
    mean = tl.sum(acc, axis=0) / (end - start).to(acc.dtype)
    acc = tl.zeros_like(acc)
    for p0 in range(start, end, BLOCK_P):
        offsets, mask = _tile(n, ch, p0, end, C, S, INTERLEAVED, BLOCK_P)
        d = tl.load(x_ptr + offsets, mask=mask, other=0).to(acc.dtype) - mean[None, :]
        acc += tl.where(mask, d * d, 0)
    _store_partial(mean_ptr, mean, n, ch, k, C, K)
    _store_partial(m2_ptr, tl.sum(acc, axis=0), n, ch, k, C, K)


@triton.jit
def forward_kernel(
    x_ptr,
    scale_ptr,
    shift_ptr,
    y_ptr,
    C,
    S,
    segment,
    K,
    alpha_hi,
    alpha_lo,
    ACT: tl.constexpr,
    INTERLEAVED: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """y = act(x * scale + shift), scale and shift [N * C] tables of the computation's dtype."""
    n, ch, start, end, k = _segment(C, S, segment, K, BLOCK_C)
    scale = _per_channel(scale_ptr, n, ch, C)
    shift = _per_channel(shift_ptr, n, ch, C)
    alpha = exact(tl.full([BLOCK_P, BLOCK_C], 1, scale.dtype), alpha_hi, alpha_lo)
    for p0 in range(start, end, BLOCK_P):
        offsets, mask = _tile(n, ch, p0, end, C, S, INTERLEAVED, BLOCK_P)
        x = tl.load(x_ptr + offsets, mask=mask, other=0).to(scale.dtype)
        y = activation(x * scale + shift, alpha, ACT, 0)
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_terms(g_ptr, s_ptr, offsets, mask, xs, xo, scale, shift, alpha, ACT: tl.constexpr,
                FROM_OUTPUT: tl.constexpr):
    """(dpre, xhat) of a tile, 0 where masked, from the incoming gradient and the saved tensor
    (y if FROM_OUTPUT, else x)."""
    g = tl.load(g_ptr + offsets, mask=mask, other=0).to(xs.dtype)
    s = tl.load(s_ptr + offsets, mask=mask, other=0).to(xs.dtype)
    if FROM_OUTPUT:
        xhat = activation_inverse(s, alpha, ACT) * xs + xo
        dpre = g * activation_derivative_from_output(s, alpha, ACT)
    else:
        xhat = s * xs + xo
        dpre = g * activation(s * scale + shift, alpha, ACT, 1)
    return tl.where(mask, dpre, 0), tl.where(mask, xhat, 0)


@triton.jit
def grad_sums_kernel(
    g_ptr,
    s_ptr,
    xs_ptr,
    xo_ptr,
    scale_ptr,
    shift_ptr,
    sum_dpre_ptr,
    sum_dpre_xhat_ptr,
    C,
    S,
    segment,
    K,
    alpha_hi,
    alpha_lo,
    ACT: tl.constexpr,
    FROM_OUTPUT: tl.constexpr,
    INTERLEAVED: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per (n, c, segment): the sums of dpre and of dpre * xhat."""
    n, ch, start, end, k = _segment(C, S, segment, K, BLOCK_C)
    xs = _per_channel(xs_ptr, n, ch, C)
    xo = _per_channel(xo_ptr, n, ch, C)
    scale = _per_channel(scale_ptr, n, ch, C)
    shift = _per_channel(shift_ptr, n, ch, C)
    alpha = exact(tl.full([BLOCK_P, BLOCK_C], 1, xs.dtype), alpha_hi, alpha_lo)
    a = tl.zeros([BLOCK_P, BLOCK_C], xs.dtype)
    b = tl.zeros_like(a)
    for p0 in range(start, end, BLOCK_P):
        offsets, mask = _tile(n, ch, p0, end, C, S, INTERLEAVED, BLOCK_P)
        dpre, xhat = _grad_terms(g_ptr, s_ptr, offsets, mask, xs, xo, scale, shift, alpha, ACT, FROM_OUTPUT)
        a += dpre
        b += dpre * xhat
    _store_partial(sum_dpre_ptr, tl.sum(a, axis=0), n, ch, k, C, K)
    _store_partial(sum_dpre_xhat_ptr, tl.sum(b, axis=0), n, ch, k, C, K)


@triton.jit
def grad_input_kernel(
    g_ptr,
    s_ptr,
    xs_ptr,
    xo_ptr,
    scale_ptr,
    shift_ptr,
    k1_ptr,
    k2_ptr,
    k3_ptr,
    dx_ptr,
    C,
    S,
    segment,
    K,
    alpha_hi,
    alpha_lo,
    ACT: tl.constexpr,
    FROM_OUTPUT: tl.constexpr,
    INTERLEAVED: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """dx = k1 * dpre + k2 * xhat + k3."""
    n, ch, start, end, k = _segment(C, S, segment, K, BLOCK_C)
    xs = _per_channel(xs_ptr, n, ch, C)
    xo = _per_channel(xo_ptr, n, ch, C)
    scale = _per_channel(scale_ptr, n, ch, C)
    shift = _per_channel(shift_ptr, n, ch, C)
    k1 = _per_channel(k1_ptr, n, ch, C)
    k2 = _per_channel(k2_ptr, n, ch, C)
    k3 = _per_channel(k3_ptr, n, ch, C)
    alpha = exact(tl.full([BLOCK_P, BLOCK_C], 1, xs.dtype), alpha_hi, alpha_lo)
    for p0 in range(start, end, BLOCK_P):
        offsets, mask = _tile(n, ch, p0, end, C, S, INTERLEAVED, BLOCK_P)
        dpre, xhat = _grad_terms(g_ptr, s_ptr, offsets, mask, xs, xo, scale, shift, alpha, ACT, FROM_OUTPUT)
        dx = dpre * k1 + xhat * k2 + k3
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# --- host side: checks, layout, and the per-channel and per-group work in float64 ---------------


@dataclass(frozen=True)
class _Plan:
    """The checked arguments and the data's shape (Setup and NormShape of csrc/norm_act_op.cpp)."""

    kind: str
    act: str
    groups: int  # statistics groups per sample for group norm, else 1
    n: int
    c: int
    s: int
    interleaved: bool

    @property
    def segment(self) -> int:
        """Positions per segment: SEGMENT elements' worth, whole rows when interleaved."""
        return max(1, SEGMENT // self.c) if self.interleaved and self.c > 0 else SEGMENT

    @property
    def segments(self) -> int:
        return 0 if self.s == 0 else triton.cdiv(self.s, self.segment)

    def group_total(self) -> int:
        """Statistics groups in all."""
        return self.c if self.kind == "batch" else self.n * (self.c if self.kind == "instance" else self.groups)

    def group_count(self) -> int:
        """Elements per statistics group."""
        per_channel = self.s * (self.n if self.kind == "batch" else 1)
        return per_channel * (self.c // self.groups if self.kind == "group" else 1)

    def sum_per_group(self, nc: torch.Tensor) -> torch.Tensor:
        """[N, C] values summed over each statistics group: [C], [N * C] or [N * G]."""
        if self.kind == "batch":
            return nc.sum(0)
        if self.kind == "instance":
            return nc.reshape(-1)
        return nc.reshape(self.n, self.groups, self.c // self.groups).sum(2).reshape(-1)

    def per_sample_channel(self, values: torch.Tensor, per_channel: bool) -> torch.Tensor:
        """Per-group values (or ``per_channel`` ones: running statistics) as [N, C]."""
        n, c = self.n, self.c
        if per_channel or self.kind == "batch":
            return values.reshape(1, c).expand(n, c)
        if self.kind == "instance":
            return values.reshape(n, c)
        return values.reshape(n, self.groups, 1).expand(n, self.groups, c // self.groups).reshape(n, c)


def _check_args(op, x, kind, weight, bias, batch_stats, eps, act, alpha, num_groups, from_output, from_output_arg):
    """Checks what both ops take, as check_args of csrc/norm_act_op.cpp; returns (act, groups)."""
    check_float_tensor(op, "x", x)
    if x.dim() < 2:
        raise ValueError(f"{op}: x must be (N, C, *spatial) with at least 2 dims, got {x.dim()} dims")
    if kind not in KINDS:
        raise ValueError(f"{op}: unknown kind={kind!r}; expected one of {', '.join(KINDS)}")
    check_channel_vector(op, "weight", weight, x)
    check_channel_vector(op, "bias", bias, x)
    if not (eps >= 0 and eps != float("inf")):
        raise ValueError(f"{op}: eps must be finite and >= 0, got {eps}")
    if not abs(alpha) < float("inf"):
        raise ValueError(f"{op}: alpha must be finite, got {alpha}")
    groups = 1
    if kind == "group":
        if not batch_stats:
            raise ValueError(f"{op}: group norm has no running statistics; batch_stats must be true")
        if num_groups < 1 or x.shape[1] % num_groups:
            raise ValueError(f"{op}: num_groups must be >= 1 and divide the {x.shape[1]} channels of x, got {num_groups}")
        groups = num_groups
    act = activations.get(act, op).name
    if from_output and act not in RECOVERABLE_FROM_OUTPUT:
        raise ValueError(f"{op}: {from_output_arg} needs an activation its output determines "
                         f"({', '.join(RECOVERABLE_FROM_OUTPUT)}), got act={act!r}")
    if x.dtype == torch.float64 and not fits_float32(alpha):
        # Triton passes float scalars as float32 (see medkern/triton/activations.py)
        raise ValueError(f"{op}: the triton backend takes alpha within float32's range for float64 tensors, "
                         f"got alpha={alpha}; use the cpu or cuda backend")
    return act, groups


def _arrange(x: torch.Tensor, kind: str, act: str, groups: int) -> tuple[torch.Tensor, _Plan]:
    """``x`` in the layout the kernels walk (itself if contiguous or channels_last-like, else a
    contiguous copy) and its plan; with a single position per (n, c) the interleaved walk is
    the one that reads rows."""
    n, c = x.shape[:2]
    s = 0 if n * c == 0 else x.numel() // (n * c)
    if not x.is_contiguous() and not x.movedim(1, -1).is_contiguous():
        x = x.contiguous()
    interleaved = x.movedim(1, -1).is_contiguous() and (not x.is_contiguous() or s == 1)
    return x, _Plan(kind, act, groups, n, c, s, interleaved)


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The computation's dtype (of the kernels' tables and partial sums) for data of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _table(nc: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """An [N, C] float64 table as the kernels read it: contiguous, in the computation's dtype."""
    return nc.to(_opmath(x.dtype)).contiguous()


def _combine_moments(plan: _Plan, mean_p: torch.Tensor, m2_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance per statistics group from the per-segment means and squared
    deviations [N, C, K], combined exactly (Chan et al.) in float64."""
    positions = torch.arange(plan.segments, device=mean_p.device, dtype=torch.float64) * plan.segment
    counts = (plan.s - positions).clamp(max=plan.segment)
    m, m2 = mean_p.double(), m2_p.double()
    total = float(plan.group_count())
    group_mean = plan.sum_per_group((m * counts).sum(2)) / total
    spread = plan.per_sample_channel(group_mean, False).unsqueeze(2)
    m2_nc = m2.sum(2) + (counts * (m - spread).square()).sum(2)
    return group_mean, plan.sum_per_group(m2_nc) / total


@dataclass
class _Affine:
    """Statistics and affine parameters folded per (n, c), float64 [N, C]: forward's scale and
    shift, and what the backward builds its tables from."""

    rstd: torch.Tensor
    mean: torch.Tensor
    gamma: torch.Tensor  # [C]
    beta: torch.Tensor  # [C]
    scale: torch.Tensor
    shift: torch.Tensor


def _affine(plan: _Plan, mean, var, weight, bias, eps: float, batch_stats: bool, like: torch.Tensor) -> _Affine:
    def as_double(t, fill):
        return t.double() if t is not None else torch.full((plan.c,), fill, dtype=torch.float64, device=like.device)

    rstd = plan.per_sample_channel((var.double() + eps).rsqrt(), not batch_stats)
    mean = plan.per_sample_channel(mean.double(), not batch_stats)
    gamma, beta = as_double(weight, 1.0), as_double(bias, 0.0)
    scale = rstd * gamma
    return _Affine(rstd, mean, gamma, beta, scale, beta - mean * scale)


def _launch(kernel, plan: _Plan, out: torch.Tensor, *args, **kwargs) -> None:
    """Runs ``kernel`` over every (sample, segment, channel block) of ``plan``; ``out`` is one of
    its outputs."""
    if out.device.type == "cpu" and is_fake(out):
        # The interpreter runs kernels eagerly on real memory; fake tensors (shape propagation)
        # only need the outputs allocated. medkern.ops refuses torch.compile in this mode.
        return
    block_p, block_c = TILES[plan.interleaved]
    grid = (plan.n * plan.segments * triton.cdiv(plan.c, block_c),)
    on_device = torch.cuda.device(out.device) if out.device.type == "cuda" else contextlib.nullcontext()
    with on_device:  # Triton launches on the current device
        torch.library.wrap_triton(kernel)[grid](
            *args, plan.c, plan.s, plan.segment, plan.segments, **kwargs,
            INTERLEAVED=plan.interleaved, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=NUM_WARPS,
        )


def _alpha_act(plan: _Plan, alpha: float) -> dict:
    hi, lo = split(alpha)
    return {"alpha_hi": hi, "alpha_lo": lo, "ACT": activations.get(plan.act).id}


FORWARD_SCHEMA = (
    "(Tensor x, str kind, Tensor? weight, Tensor? bias, Tensor? running_mean, Tensor? running_var, "
    "bool batch_stats, float eps, str act, float alpha, int num_groups, bool keep_output) "
    "-> (Tensor, Tensor, Tensor)"
)
BACKWARD_SCHEMA = (
    "(Tensor grad, Tensor saved, bool saved_is_output, Tensor mean, Tensor var, Tensor? weight, "
    "Tensor? bias, str kind, bool batch_stats, float eps, str act, float alpha, int num_groups, "
    "bool[3] output_mask) -> (Tensor, Tensor, Tensor)"
)


@torch.library.triton_op("medkern::triton_norm_act", mutates_args=(), schema=FORWARD_SCHEMA)
def triton_norm_act(x, kind, weight, bias, running_mean, running_var, batch_stats, eps, act, alpha, num_groups,
                    keep_output):
    op = "medkern::triton_norm_act"
    act, groups = _check_args(op, x, kind, weight, bias, batch_stats, eps, act, alpha, num_groups,
                              keep_output, "keep_output")
    if not batch_stats and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: running_mean and running_var are required when batch_stats is false")
    check_channel_vector(op, "running_mean", running_mean, x)
    check_channel_vector(op, "running_var", running_var, x)
    x, plan = _arrange(x, kind, act, groups)
    acc = _opmath(x.dtype)
    if batch_stats:
        mean_p = x.new_empty((plan.n, plan.c, plan.segments), dtype=acc)
        m2_p = torch.empty_like(mean_p)
        if x.numel() > 0:
            _launch(moments_kernel, plan, mean_p, x, mean_p, m2_p)
        mean, var = _combine_moments(plan, mean_p, m2_p)
    else:
        # copies: the outputs may not alias the inputs, which they would for float64
        mean, var = running_mean.to(torch.float64, copy=True), running_var.to(torch.float64, copy=True)
    affine = _affine(plan, mean, var, weight, bias, eps, batch_stats, x)
    y = torch.empty_like(x)
    if x.numel() > 0:
        _launch(forward_kernel, plan, y, x, _table(affine.scale, x), _table(affine.shift, x), y,
                **_alpha_act(plan, alpha))
    return y, mean.to(acc), var.to(acc)


@torch.library.triton_op("medkern::triton_norm_act_backward", mutates_args=(), schema=BACKWARD_SCHEMA)
def triton_norm_act_backward(grad, saved, saved_is_output, mean, var, weight, bias, kind, batch_stats, eps, act,
                             alpha, num_groups, output_mask):
    op = "medkern::triton_norm_act_backward"
    act, groups = _check_args(op, saved, kind, weight, bias, batch_stats, eps, act, alpha, num_groups,
                              saved_is_output, "saved_is_output")
    if grad.device != saved.device:
        raise ValueError(f"{op}: grad must be on {saved.device} (the device of x), got {grad.device}")
    if grad.dtype != saved.dtype:
        raise TypeError(f"{op}: grad must have dtype {saved.dtype} (that of x), got {grad.dtype}")
    if grad.shape != saved.shape:
        raise ValueError(f"{op}: grad must have the shape of x {list(saved.shape)}, got {list(grad.shape)}")
    saved, plan = _arrange(saved, kind, act, groups)
    n, c = plan.n, plan.c
    expected_stats = plan.group_total() if batch_stats else c
    for arg, t in (("mean", mean), ("var", var)):
        if t.device != saved.device:
            raise ValueError(f"{op}: {arg} must be on {saved.device} (the device of x), got {t.device}")
        if t.dim() != 1 or t.numel() != expected_stats:
            raise ValueError(f"{op}: {arg} must be 1-d with {expected_stats} elements (one per statistics group), "
                             f"got shape {list(t.shape)}")
    g = grad if grad.stride() == saved.stride() else torch.empty_like(saved).copy_(grad)

    affine = _affine(plan, mean, var, weight, bias, eps, batch_stats, saved)
    if saved_is_output:  # xhat = (act^-1(y) - beta) / gamma
        xs, xo = (1.0 / affine.gamma).expand(n, c), (-affine.beta / affine.gamma).expand(n, c)
    else:  # xhat = (x - mean) * rstd
        xs, xo = affine.rstd, -affine.mean * affine.rstd
    terms = [_table(t, saved) for t in (xs, xo, affine.scale, affine.shift)]
    options = {**_alpha_act(plan, alpha), "FROM_OUTPUT": saved_is_output}

    want_weight = output_mask[1] and weight is not None
    want_bias = output_mask[2] and bias is not None
    k2 = k3 = torch.zeros((n, c), dtype=torch.float64, device=saved.device)
    dweight, dbias = saved.new_empty((0,)), saved.new_empty((0,))  # distinct: outputs may not alias
    if saved.numel() > 0 and (batch_stats or want_weight or want_bias):
        sum_dpre = saved.new_empty((n, c, plan.segments), dtype=_opmath(saved.dtype))
        sum_dpre_xhat = torch.empty_like(sum_dpre)
        _launch(grad_sums_kernel, plan, sum_dpre, g, saved, *terms, sum_dpre, sum_dpre_xhat, **options)
        a, b = sum_dpre.double().sum(2), sum_dpre_xhat.double().sum(2)
        if want_weight:
            dweight = b.sum(0).to(weight.dtype)
        if want_bias:
            dbias = a.sum(0).to(bias.dtype)
        if batch_stats:  # dx = rstd * (dxhat - mean_g(dxhat) - xhat * mean_g(dxhat * xhat)), dxhat = gamma * dpre
            count = float(plan.group_count())
            mean_dxhat = plan.per_sample_channel(plan.sum_per_group(a * affine.gamma) / count, False)
            mean_dxhat_xhat = plan.per_sample_channel(plan.sum_per_group(b * affine.gamma) / count, False)
            k2, k3 = -affine.rstd * mean_dxhat_xhat, -affine.rstd * mean_dxhat
    elif saved.numel() == 0:
        if want_weight:
            dweight = torch.zeros_like(weight)
        if want_bias:
            dbias = torch.zeros_like(bias)

    dx = saved.new_empty((0,))
    if output_mask[0]:
        dx = torch.empty_like(saved)
        if saved.numel() > 0:
            k_tables = [_table(t, saved) for t in (affine.scale, k2, k3)]  # k1 = rstd * gamma = scale
            _launch(grad_input_kernel, plan, dx, g, saved, *terms, *k_tables, dx, **options)
    return dx, dweight, dbias


def forward_op():
    return torch.ops.medkern.triton_norm_act.default


def backward_op():
    return torch.ops.medkern.triton_norm_act_backward.default


register_autograd("medkern::triton_norm_act", "medkern::triton_norm_act_backward")


# The variants compiled ahead of time (medkern.triton.aot). float32 and float64: every kernel,
# activation, backward mode and layout. float16 and bfloat16 compute in float32 exactly as
# float32 does and differ from it only in their loads and stores: every kernel, activation and
# backward mode, float16 planar and bfloat16 interleaved.
_AOT_LAYOUTS = {torch.float32: (False, True), torch.float64: (False, True), torch.float16: (False,),
                torch.bfloat16: (True,)}
_POINTER = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
_DATA_POINTERS = ("x_ptr", "y_ptr", "g_ptr", "s_ptr", "dx_ptr")  # x's dtype; the others are tables and partials


def _signature(kernel, dtype: torch.dtype) -> dict:
    def of(name, annotation):
        if "constexpr" in str(annotation):
            return "constexpr"
        if name.endswith("_ptr"):
            return _POINTER[dtype] if name in _DATA_POINTERS else _POINTER[_opmath(dtype)]
        return "fp32" if name.startswith("alpha") else "i64"

    # read from the Python function, which the compiled and the interpreted kernel both wrap
    params = inspect.signature(kernel.fn).parameters
    return {name: of(name, p.annotation) for name, p in params.items()}


def aot_variants():
    modes = [(act, False) for act in activations.NAMES] + [(act, True) for act in RECOVERABLE_FROM_OUTPUT]
    for dtype, layouts in _AOT_LAYOUTS.items():
        for interleaved in layouts:
            block_p, block_c = TILES[interleaved]
            tile = {"INTERLEAVED": interleaved, "BLOCK_P": block_p, "BLOCK_C": block_c}
            where = f"{'interleaved' if interleaved else 'planar'},{_POINTER[dtype][1:]}"
            variants = [(moments_kernel, "", {})]
            variants += [(forward_kernel, f"{act},", {"ACT": activations.get(act).id}) for act in activations.NAMES]
            variants += [
                (kernel, f"{act},{'from_output,' if from_output else ''}",
                 {"ACT": activations.get(act).id, "FROM_OUTPUT": from_output})
                for kernel, (act, from_output) in itertools.product((grad_sums_kernel, grad_input_kernel), modes)
            ]
            for kernel, label, constexprs in variants:
                name = f"norm_act.{kernel.__name__}[{label}{where}]"
                yield name, kernel, _signature(kernel, dtype), {**constexprs, **tile}
