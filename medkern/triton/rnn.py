"""rnn_sequence in Triton: ops ``medkern::triton_rnn_sequence`` and ``medkern::triton_rnn_sequence_backward``.

Same schemas, semantics, argument checks and outputs as the C++ ops (csrc/medkern.cpp,
csrc/rnn_op.cpp): states, cells and the ``work`` tensor laid out by WorkLayout of
csrc/common/rnn.h, so the autograd and the fake kernels of medkern.ops.rnn serve these ops too.
The host loop is csrc/rnn_op.cpp's, in Python: per step the recurrent GEMM (torch.mm /
torch.addmm into preallocated buffers: cuBLAS on a GPU) and the step kernels below, which
mirror csrc/cpu/rnn_kernel.cpp with the math of csrc/common/rnn.h:

    cell_forward_kernel     gates, c[s + 1], work[s] and the candidate of every running sequence
    state_forward_kernel    h[s + 1] = zoneout of h[s] and the candidate (h[s] once finished)
    state_backward_kernel   d h~ and the zoneout part of d h[s], from d h[s + 1]
    cell_backward_kernel    dxproj, dpre (drec, dc_hat) of step s, d c[s], gru's direct part of d h[s]

and the weight gradients are one GEMM (or sum) each over the whole sequence.

One program per sequence (row b) and step: a row's gates are walked as chunks of BLOCK_H
(the next power of two of H) lanes, gate k at columns [k H, (k + 1) H) of xproj, pre and work;
state rows (P wide, P != H with a projection) as BLOCK_P lanes. The recurrent layer norm
reduces over all G = gates * H columns as the sum of its chunks' tl.sum, so no tile is G wide.
Everything is computed in the op-math type U (float32 for half data, else the data's dtype);
the cells, ``work`` and the per-step masks are U, xproj, pre, the states and dxproj the data's
dtype. float64 runs in the interpreter (eps passed as a hi/lo float32 pair, see
medkern/triton/activations.py); the AOT list compiles float32, float16 and bfloat16.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Optional

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from .._args import check_float_tensor
from ..ops.rnn import fake_backward, fake_forward, register_autograd
from ..reference.rnn import CELLS, GATES
from .activations import split, tanh

FORWARD = "medkern::triton_rnn_sequence"
BACKWARD = "medkern::triton_rnn_sequence_backward"

# Cell ids: enum class Cell of csrc/common/rnn.h.
CELL_IDS = {"lstm": 0, "gru": 1, "rnn_tanh": 2, "rnn_relu": 3}
LSTM: tl.constexpr = tl.constexpr(0)
GRU: tl.constexpr = tl.constexpr(1)
RNN_TANH: tl.constexpr = tl.constexpr(2)
RNN_RELU: tl.constexpr = tl.constexpr(3)



# --- device side ------------------------------------------------------------------------------


@triton.jit
def _layout(H, CELL: tl.constexpr, NG: tl.constexpr, NORM_H: tl.constexpr, NORM_C: tl.constexpr):
    """WorkLayout of csrc/common/rnn.h: offsets (extra, xh, rstd_h, xc, rstd_c) and the width."""
    G = H * NG
    width = G
    extra = G
    if CELL == LSTM or CELL == GRU:
        width += H
    xh = width
    rstd_h = width + G
    if NORM_H:
        width += G + 1
    xc = width
    rstd_c = width + H
    if NORM_C:
        width += H + 1
    return extra, xh, rstd_h, xc, rstd_c, width


@triton.jit
def _length(lengths_ptr, b, T, LENGTHS: tl.constexpr):
    """Sequence b's length (int64): lengths[b], or T without lengths."""
    if LENGTHS:
        n = tl.load(lengths_ptr + b)
    else:
        n = b * 0 + T
    return n


@triton.jit
def _load(ptr, offset, j, m, dtype: tl.constexpr):
    """The lanes j (mask m) of a row at ``offset`` in ``dtype``, 0 where masked."""
    return tl.load(ptr + offset + j, mask=m, other=0).to(dtype)


@triton.jit
def _store(ptr, offset, j, m, value):
    tl.store(ptr + offset + j, value.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def _sigmoid(z):
    return 1 / (1 + tl.exp(-z))


@triton.jit
def _sqrt(x):
    """IEEE square root (tl.sqrt_rn is float32 only; float64's tl.sqrt is IEEE)."""
    if x.dtype == tl.float64:
        r = tl.sqrt(x)
    else:
        r = tl.sqrt_rn(x)
    return r


@triton.jit
def _chunk_sum(a0, a1, a2, a3, NG: tl.constexpr):
    """The sum over a row held as NG chunks (the rest unused)."""
    total = tl.sum(a0, axis=0)
    if NG > 1:
        total += tl.sum(a1, axis=0)
        total += tl.sum(a2, axis=0)
    if NG > 3:
        total += tl.sum(a3, axis=0)
    return total


@triton.jit
def _moments(p0, p1, p2, p3, m, n, eps, NG: tl.constexpr):
    """mean and 1 / sqrt(var + eps) of a row of n values held as NG chunks (two passes), as
    row_moments of csrc/cpu/rnn_kernel.cpp."""
    mean = _chunk_sum(p0, p1, p2, p3, NG) / n
    d0 = tl.where(m, p0 - mean, 0)
    d1 = tl.where(m, p1 - mean, 0)
    d2 = tl.where(m, p2 - mean, 0)
    d3 = tl.where(m, p3 - mean, 0)
    var = _chunk_sum(d0 * d0, d1 * d1, d2 * d2, d3 * d3, NG) / n
    return mean, 1 / _sqrt(var + eps)


@triton.jit
def _layer_norm_grad(dx, xhat, rstd, mean1, mean2):
    """layer_norm_grad of csrc/common/rnn.h: rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))."""
    return rstd * (dx - mean1 - xhat * mean2)


@triton.jit
def cell_forward_kernel(
    xproj_ptr,
    pre_ptr,
    states_ptr,
    cells_ptr,
    work_ptr,
    cand_ptr,
    zc_ptr,
    mask_ptr,
    nhw_ptr,
    nhb_ptr,
    ncw_ptr,
    ncb_ptr,
    lengths_ptr,
    step,
    T,
    B,
    H,
    P,
    eps_hi,
    eps_lo,
    CELL: tl.constexpr,
    NORM_H: tl.constexpr,
    NORM_C: tl.constexpr,
    ZONEOUT_C: tl.constexpr,
    MASK: tl.constexpr,
    LENGTHS: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Step ``step`` of sequence b = program id: work[s, b], cells[s + 1, b] (lstm) and the
    candidate row (h~, or o * u with a projection); finished sequences: c[s + 1] = c[s], work
    and candidate rows zero."""
    acc = work_ptr.dtype.element_ty
    NG: tl.constexpr = 4 if CELL == LSTM else 3 if CELL == GRU else 1
    b = tl.program_id(0).to(tl.int64)
    s = b * 0 + step
    j = tl.arange(0, BLOCK_H)
    m = j < H
    G = H * NG
    extra, xh_off, rstd_h_off, xc_off, rstd_c_off, W = _layout(H, CELL, NG, NORM_H, NORM_C)
    w_row = (s * B + b) * W
    c_row = (s * B + b) * H  # cells[s, b]; cells[s + 1, b] is B * H further
    length = _length(lengths_ptr, b, T, LENGTHS)
    if s < length:
        if REVERSE:
            t = length - 1 - s
        else:
            t = s
        x_row = (t * B + b) * G
        p_row = b * G
        zero = tl.zeros([BLOCK_H], acc)
        x1, x2, x3 = zero, zero, zero
        r1, r2, r3 = zero, zero, zero
        x0 = _load(xproj_ptr, x_row, j, m, acc)
        r0 = _load(pre_ptr, p_row, j, m, acc)
        if NG > 1:
            x1 = _load(xproj_ptr, x_row + H, j, m, acc)
            x2 = _load(xproj_ptr, x_row + 2 * H, j, m, acc)
            r1 = _load(pre_ptr, p_row + H, j, m, acc)
            r2 = _load(pre_ptr, p_row + 2 * H, j, m, acc)
        if NG > 3:
            x3 = _load(xproj_ptr, x_row + 3 * H, j, m, acc)
            r3 = _load(pre_ptr, p_row + 3 * H, j, m, acc)
        if NORM_H:  # rec = LN(pre) * weight + bias over all G columns
            eps = tl.cast(eps_hi, acc) + tl.cast(eps_lo, acc)
            mean, rstd = _moments(r0, r1, r2, r3, m, G, eps, NG)
            xh0 = (r0 - mean) * rstd
            _store(work_ptr, w_row + xh_off, j, m, xh0)
            r0 = xh0 * _load(nhw_ptr, 0, j, m, acc) + _load(nhb_ptr, 0, j, m, acc)
            if NG > 1:
                xh1 = (r1 - mean) * rstd
                xh2 = (r2 - mean) * rstd
                _store(work_ptr, w_row + xh_off + H, j, m, xh1)
                _store(work_ptr, w_row + xh_off + 2 * H, j, m, xh2)
                r1 = xh1 * _load(nhw_ptr, H, j, m, acc) + _load(nhb_ptr, H, j, m, acc)
                r2 = xh2 * _load(nhw_ptr, 2 * H, j, m, acc) + _load(nhb_ptr, 2 * H, j, m, acc)
            if NG > 3:
                xh3 = (r3 - mean) * rstd
                _store(work_ptr, w_row + xh_off + 3 * H, j, m, xh3)
                r3 = xh3 * _load(nhw_ptr, 3 * H, j, m, acc) + _load(nhb_ptr, 3 * H, j, m, acc)
            tl.store(work_ptr + w_row + rstd_h_off, rstd.to(acc))
        if MASK:
            keep_cand = _load(mask_ptr, c_row, j, m, acc)
        else:
            keep_cand = zero + 1
        if CELL == LSTM:
            i = _sigmoid(x0 + r0)
            f = _sigmoid(x1 + r1)
            g = tanh(x2 + r2)
            o = _sigmoid(x3 + r3)
            _store(work_ptr, w_row, j, m, i)
            _store(work_ptr, w_row + H, j, m, f)
            _store(work_ptr, w_row + 2 * H, j, m, g)
            _store(work_ptr, w_row + 3 * H, j, m, o)
            c_prev = _load(cells_ptr, c_row, j, m, acc)
            c_new = f * c_prev + i * (g * keep_cand)
            if ZONEOUT_C:
                keep = _load(zc_ptr, c_row, j, m, acc)
                _store(cells_ptr, c_row + B * H, j, m, keep * c_prev + (1 - keep) * c_new)
            else:
                _store(cells_ptr, c_row + B * H, j, m, c_new)
            if NORM_C:  # u = tanh(LN(c_new) * weight + bias)
                eps = tl.cast(eps_hi, acc) + tl.cast(eps_lo, acc)
                mean_c, rstd_c = _moments(c_new, zero, zero, zero, m, H, eps, 1)
                xc = (c_new - mean_c) * rstd_c
                _store(work_ptr, w_row + xc_off, j, m, xc)
                tl.store(work_ptr + w_row + rstd_c_off, rstd_c.to(acc))
                u = tanh(xc * _load(ncw_ptr, 0, j, m, acc) + _load(ncb_ptr, 0, j, m, acc))
            else:
                u = tanh(c_new)
            _store(work_ptr, w_row + extra, j, m, u)
            _store(cand_ptr, b * H, j, m, o * u)
        elif CELL == GRU:
            h_prev = _load(states_ptr, (s * B + b) * P, j, m, acc)
            r = _sigmoid(x0 + r0)
            z = _sigmoid(x1 + r1)
            n = tanh(x2 + r * r2)
            _store(work_ptr, w_row, j, m, r)
            _store(work_ptr, w_row + H, j, m, z)
            _store(work_ptr, w_row + 2 * H, j, m, n)
            _store(work_ptr, w_row + extra, j, m, r2)
            _store(cand_ptr, b * H, j, m, (1 - z) * (n * keep_cand) + z * h_prev)
        else:
            arg = x0 + r0
            if CELL == RNN_TANH:
                h = tanh(arg)
            else:
                h = tl.where(arg < 0, zero, arg)  # NaN propagates, as torch's relu
            _store(work_ptr, w_row, j, m, h)
            _store(cand_ptr, b * H, j, m, h)
    else:
        zero = tl.zeros([BLOCK_H], acc)
        for k in range(0, W, BLOCK_H):
            _store(work_ptr, w_row + k, j, k + j < W, zero)
        _store(cand_ptr, b * H, j, m, zero)
        if CELL == LSTM:
            _store(cells_ptr, c_row + B * H, j, m, _load(cells_ptr, c_row, j, m, acc))


@triton.jit
def state_forward_kernel(
    states_ptr,
    cand_ptr,
    zh_ptr,
    lengths_ptr,
    step,
    T,
    B,
    P,
    ZONEOUT_H: tl.constexpr,
    LENGTHS: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """states[s + 1, b] = zoneout of states[s, b] and the candidate row (states[s, b] once finished)."""
    acc = cand_ptr.dtype.element_ty
    b = tl.program_id(0).to(tl.int64)
    s = b * 0 + step
    j = tl.arange(0, BLOCK_P)
    m = j < P
    prev = (s * B + b) * P
    length = _length(lengths_ptr, b, T, LENGTHS)
    if s < length:
        cand = _load(cand_ptr, b * P, j, m, acc)
        if ZONEOUT_H:
            keep = _load(zh_ptr, prev, j, m, acc)
            h = keep * _load(states_ptr, prev, j, m, acc) + (1 - keep) * cand
        else:
            h = cand
        _store(states_ptr, prev + B * P, j, m, h)
    else:  # the state stays put: copied in the data's dtype
        tl.store(states_ptr + prev + B * P + j, tl.load(states_ptr + prev + j, mask=m), mask=m)


@triton.jit
def state_backward_kernel(
    grad_ptr,
    gemm_ptr,
    carry_ptr,
    dcand_ptr,
    dcand_offset,
    zh_ptr,
    lengths_ptr,
    step,
    T,
    B,
    P,
    ZONEOUT_H: tl.constexpr,
    LENGTHS: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    """dh = carry + d states[s + 1] + (d pre[s + 1] @ weight_hh); running sequences: d h~ =
    (1 - keep) * dh and carry = keep * dh (keep = 0 without zoneout); finished ones: carry = dh,
    d h~ = 0. ``gemm_ptr`` holds zeros at the last step (where C++ passes no GEMM)."""
    acc = carry_ptr.dtype.element_ty
    b = tl.program_id(0).to(tl.int64)
    s = b * 0 + step
    j = tl.arange(0, BLOCK_P)
    m = j < P
    row = b * P
    dh = _load(carry_ptr, row, j, m, acc) + _load(grad_ptr, ((s + 1) * B + b) * P, j, m, acc)
    dh = dh + _load(gemm_ptr, row, j, m, acc)
    length = _length(lengths_ptr, b, T, LENGTHS)
    if s < length:
        if ZONEOUT_H:
            keep = _load(zh_ptr, (s * B + b) * P, j, m, acc)
            _store(carry_ptr, row, j, m, keep * dh)
            _store(dcand_ptr, dcand_offset + row, j, m, (1 - keep) * dh)
        else:
            _store(carry_ptr, row, j, m, tl.zeros([BLOCK_P], acc))
            _store(dcand_ptr, dcand_offset + row, j, m, dh)
    else:
        _store(carry_ptr, row, j, m, dh)
        _store(dcand_ptr, dcand_offset + row, j, m, tl.zeros([BLOCK_P], acc))


@triton.jit
def cell_backward_kernel(
    dh_ptr,
    grad_c_ptr,
    carry_c_ptr,
    carry_h_ptr,
    states_ptr,
    cells_ptr,
    work_ptr,
    dxproj_ptr,
    dpre_ptr,
    drec_ptr,
    dc_hat_ptr,
    zc_ptr,
    mask_ptr,
    nhw_ptr,
    ncw_ptr,
    lengths_ptr,
    step,
    T,
    B,
    H,
    P,
    CELL: tl.constexpr,
    NORM_H: tl.constexpr,
    NORM_C: tl.constexpr,
    ZONEOUT_C: tl.constexpr,
    MASK: tl.constexpr,
    GRAD_C: tl.constexpr,
    LENGTHS: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Step ``step`` of sequence b backward, from d h~ (or d (o * u) with a projection) in
    ``dh_ptr``: dxproj at the step's time, dpre[s] (drec[s], dc_hat[s]), carry_c := d c[s]
    (lstm) and carry_h += the direct part of d h[s] (gru). Finished sequences: zero rows
    (dxproj at time s), carry_c += d cells[s + 1]."""
    acc = work_ptr.dtype.element_ty
    NG: tl.constexpr = 4 if CELL == LSTM else 3 if CELL == GRU else 1
    b = tl.program_id(0).to(tl.int64)
    s = b * 0 + step
    j = tl.arange(0, BLOCK_H)
    m = j < H
    G = H * NG
    extra, xh_off, rstd_h_off, xc_off, rstd_c_off, W = _layout(H, CELL, NG, NORM_H, NORM_C)
    w_row = (s * B + b) * W
    h_row = (s * B + b) * H  # [T(+1), B, H] buffers at step s
    g_row = (s * B + b) * G  # [T, B, G] buffers at step s
    zero = tl.zeros([BLOCK_H], acc)
    length = _length(lengths_ptr, b, T, LENGTHS)
    if s < length:
        if REVERSE:
            t = length - 1 - s
        else:
            t = s
        dh = _load(dh_ptr, b * H, j, m, acc)
        if MASK:
            keep_cand = _load(mask_ptr, h_row, j, m, acc)
        else:
            keep_cand = zero + 1
        dz1, dz2, dz3 = zero, zero, zero
        d1, d2, d3 = zero, zero, zero  # d of the recurrent part rec, by gate
        if CELL == LSTM:
            i = _load(work_ptr, w_row, j, m, acc)
            f = _load(work_ptr, w_row + H, j, m, acc)
            g = _load(work_ptr, w_row + 2 * H, j, m, acc)
            o = _load(work_ptr, w_row + 3 * H, j, m, acc)
            u = _load(work_ptr, w_row + extra, j, m, acc)
            dz3 = dh * u * o * (1 - o)
            dc_hat = dh * o * (1 - u * u)
            if NORM_C:
                _store(dc_hat_ptr, h_row, j, m, dc_hat)
                xc = _load(work_ptr, w_row + xc_off, j, m, acc)
                rstd_c = tl.load(work_ptr + w_row + rstd_c_off)
                dx = dc_hat * _load(ncw_ptr, 0, j, m, acc)
                dc_u = _layer_norm_grad(dx, xc, rstd_c, tl.sum(dx, axis=0) / H, tl.sum(dx * xc, axis=0) / H)
            else:
                dc_u = dc_hat
            d_c = _load(carry_c_ptr, b * H, j, m, acc)
            if GRAD_C:
                d_c = d_c + _load(grad_c_ptr, h_row + B * H, j, m, acc)
            if ZONEOUT_C:
                keep = _load(zc_ptr, h_row, j, m, acc)
            else:
                keep = zero
            dc_new = (1 - keep) * d_c + dc_u
            c_prev = _load(cells_ptr, h_row, j, m, acc)
            dz0 = dc_new * (g * keep_cand) * i * (1 - i)
            dz1 = dc_new * c_prev * f * (1 - f)
            dz2 = dc_new * i * keep_cand * (1 - g * g)
            _store(carry_c_ptr, b * H, j, m, keep * d_c + dc_new * f)
            d0, d1, d2, d3 = dz0, dz1, dz2, dz3
        elif CELL == GRU:
            r = _load(work_ptr, w_row, j, m, acc)
            z = _load(work_ptr, w_row + H, j, m, acc)
            n = _load(work_ptr, w_row + 2 * H, j, m, acc)
            rn = _load(work_ptr, w_row + extra, j, m, acc)
            h_prev = _load(states_ptr, (s * B + b) * P, j, m, acc)
            dz2 = dh * (1 - z) * keep_cand * (1 - n * n)
            dz1 = dh * (h_prev - n * keep_cand) * z * (1 - z)
            dz0 = dz2 * rn * r * (1 - r)
            _store(carry_h_ptr, b * P, j, m, _load(carry_h_ptr, b * P, j, m, acc) + dh * z)
            d0, d1, d2 = dz0, dz1, dz2 * r
        else:
            cand = _load(work_ptr, w_row, j, m, acc)
            if CELL == RNN_TANH:
                dz0 = dh * (1 - cand * cand)
            else:
                dz0 = dh * tl.where(cand > 0, zero + 1, zero)  # relu'(0) = 0, as torch
            d0 = dz0
        x_row = (t * B + b) * G
        _store(dxproj_ptr, x_row, j, m, dz0)
        if NG > 1:
            _store(dxproj_ptr, x_row + H, j, m, dz1)
            _store(dxproj_ptr, x_row + 2 * H, j, m, dz2)
        if NG > 3:
            _store(dxproj_ptr, x_row + 3 * H, j, m, dz3)
        if NORM_H:  # dpre = the layer norm's backward of drec over all G columns
            rstd = tl.load(work_ptr + w_row + rstd_h_off)
            xh0 = _load(work_ptr, w_row + xh_off, j, m, acc)
            dx0 = d0 * _load(nhw_ptr, 0, j, m, acc)
            xh1, xh2, xh3 = zero, zero, zero
            dx1, dx2, dx3 = zero, zero, zero
            if NG > 1:
                xh1 = _load(work_ptr, w_row + xh_off + H, j, m, acc)
                xh2 = _load(work_ptr, w_row + xh_off + 2 * H, j, m, acc)
                dx1 = d1 * _load(nhw_ptr, H, j, m, acc)
                dx2 = d2 * _load(nhw_ptr, 2 * H, j, m, acc)
            if NG > 3:
                xh3 = _load(work_ptr, w_row + xh_off + 3 * H, j, m, acc)
                dx3 = d3 * _load(nhw_ptr, 3 * H, j, m, acc)
            mean1 = _chunk_sum(dx0, dx1, dx2, dx3, NG) / G
            mean2 = _chunk_sum(dx0 * xh0, dx1 * xh1, dx2 * xh2, dx3 * xh3, NG) / G
            _store(drec_ptr, g_row, j, m, d0)
            _store(dpre_ptr, g_row, j, m, _layer_norm_grad(dx0, xh0, rstd, mean1, mean2))
            if NG > 1:
                _store(drec_ptr, g_row + H, j, m, d1)
                _store(drec_ptr, g_row + 2 * H, j, m, d2)
                _store(dpre_ptr, g_row + H, j, m, _layer_norm_grad(dx1, xh1, rstd, mean1, mean2))
                _store(dpre_ptr, g_row + 2 * H, j, m, _layer_norm_grad(dx2, xh2, rstd, mean1, mean2))
            if NG > 3:
                _store(drec_ptr, g_row + 3 * H, j, m, d3)
                _store(dpre_ptr, g_row + 3 * H, j, m, _layer_norm_grad(dx3, xh3, rstd, mean1, mean2))
        else:
            _store(dpre_ptr, g_row, j, m, d0)
            if NG > 1:
                _store(dpre_ptr, g_row + H, j, m, d1)
                _store(dpre_ptr, g_row + 2 * H, j, m, d2)
            if NG > 3:
                _store(dpre_ptr, g_row + 3 * H, j, m, d3)
    else:
        for k in range(0, G, BLOCK_H):
            _store(dxproj_ptr, g_row + k, j, k + j < G, zero)  # time s: finished sequences read s
            _store(dpre_ptr, g_row + k, j, k + j < G, zero)
            if NORM_H:
                _store(drec_ptr, g_row + k, j, k + j < G, zero)
        if NORM_C:
            _store(dc_hat_ptr, h_row, j, m, zero)
        if CELL == LSTM:
            if GRAD_C:
                d_c = _load(carry_c_ptr, b * H, j, m, acc) + _load(grad_c_ptr, h_row + B * H, j, m, acc)
                _store(carry_c_ptr, b * H, j, m, d_c)


# --- host side: checks (those of csrc/rnn_op.cpp), buffers and the loop over steps ---------------


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _shape(t: torch.Tensor) -> list:
    return list(t.shape)


def _data_arg(op: str, arg: str, t: torch.Tensor, like: torch.Tensor, shape) -> torch.Tensor:
    """``t`` checked to have xproj's dtype, device and ``shape``; contiguous."""
    if t.device != like.device:
        raise ValueError(f"{op}: {arg} must be on {like.device} (the device of xproj), got {t.device}")
    if t.dtype != like.dtype:
        raise TypeError(f"{op}: {arg} must have dtype {like.dtype} (that of xproj), got {t.dtype}")
    if list(t.shape) != list(shape):
        raise ValueError(f"{op}: {arg} must have shape {list(shape)}, got {_shape(t)}")
    return t.contiguous()


def _opmath_arg(op: str, arg: str, t: Optional[torch.Tensor], like: torch.Tensor, shape) -> Optional[torch.Tensor]:
    """``t`` as a contiguous tensor of the op-math type (xproj's dtype, or the op-math type
    accepted), checked for device and shape; None if absent."""
    if t is None:
        return None
    check_float_tensor(op, arg, t)
    if t.device != like.device:
        raise ValueError(f"{op}: {arg} must be on {like.device} (the device of xproj), got {t.device}")
    acc = _opmath(like.dtype)
    if t.dtype not in (like.dtype, acc):
        also = " or float32" if acc != like.dtype else ""
        raise TypeError(f"{op}: {arg} must have dtype {like.dtype} (that of xproj){also}, got {t.dtype}")
    if list(t.shape) != list(shape):
        raise ValueError(f"{op}: {arg} must have shape {list(shape)}, got {_shape(t)}")
    return t.to(acc).contiguous()


def _lengths_arg(op: str, lengths: Optional[torch.Tensor], like: torch.Tensor, steps: int, batch: int):
    if lengths is None:
        return None
    if lengths.dtype != torch.int64:
        raise TypeError(f"{op}: lengths must be int64, got {lengths.dtype}")
    if lengths.device != like.device:
        raise ValueError(f"{op}: lengths must be on {like.device} (the device of xproj), got {lengths.device}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{op}: lengths must be 1-d with {batch} elements (the batch), got shape {_shape(lengths)}")
    # on a GPU, medkern.ops.rnn checks before moving them there; fake tensors hold no values
    if lengths.device.type == "cpu" and batch > 0 and not is_fake(lengths):
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 0 or hi > steps:
            raise ValueError(f"{op}: lengths must lie in [0, {steps}] (the steps of xproj), got values in [{lo}, {hi}]")
    return lengths.contiguous()


class _Layout:
    """WorkLayout of csrc/common/rnn.h: the offsets of what one row of ``work`` holds."""

    def __init__(self, cell: str, hidden: int, norm_h: bool, norm_c: bool):
        g = GATES[cell] * hidden
        self.width = g
        self.extra = self.xh = self.xc = -1
        if cell in ("lstm", "gru"):
            self.extra = self.width
            self.width += hidden
        if norm_h:
            self.xh = self.width
            self.width += g + 1
        if norm_c:
            self.xc = self.width
            self.width += hidden + 1


class _Call:
    """The checked shape and the optional tensors in kernel form (Call and setup() of csrc/rnn_op.cpp)."""

    def __init__(self, op, like, steps, batch, gates, state, cell, reverse, lengths, proj, norm_h_weight,
                 norm_h_bias, norm_c_weight, norm_c_bias, eps, zoneout_h, zoneout_c, candidate_mask):
        if cell not in CELLS:
            raise ValueError(f"{op}: unknown cell='{cell}'; expected one of {', '.join(CELLS)}")
        k = GATES[cell]
        if gates % k:
            raise ValueError(f"{op}: the last dim of xproj ({gates}) must be {k} * hidden_size for cell='{cell}'")
        self.cell, self.steps, self.batch, self.hidden, self.state = cell, steps, batch, gates // k, state
        self.gates, self.proj, self.reverse = gates, proj, bool(reverse)
        H = self.hidden
        if not proj and state != H:
            raise ValueError(f"{op}: weight_hh must be ({gates}, {H}) without a projection, got ({gates}, {state})")
        if proj and cell != "lstm":
            raise ValueError(f"{op}: weight_hr (a projection) is for cell='lstm' only")
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"{op}: eps must be finite and > 0, got {eps}")
        self.eps = float(eps)
        self.lengths = _lengths_arg(op, lengths, like, steps, batch)
        if (norm_h_weight is None) != (norm_h_bias is None):
            raise ValueError(f"{op}: norm_h_weight and norm_h_bias must be given together")
        if (norm_c_weight is None) != (norm_c_bias is None):
            raise ValueError(f"{op}: norm_c_weight and norm_c_bias must be given together")
        if norm_c_weight is not None and cell != "lstm":
            raise ValueError(f"{op}: norm_c_weight (the cell-state layer norm) is for cell='lstm' only")
        self.norm_h, self.norm_c = norm_h_weight is not None, norm_c_weight is not None
        self.norm_h_weight = _opmath_arg(op, "norm_h_weight", norm_h_weight, like, [gates])
        self.norm_h_bias = _opmath_arg(op, "norm_h_bias", norm_h_bias, like, [gates])
        self.norm_c_weight = _opmath_arg(op, "norm_c_weight", norm_c_weight, like, [H])
        self.norm_c_bias = _opmath_arg(op, "norm_c_bias", norm_c_bias, like, [H])
        if zoneout_c is not None and cell != "lstm":
            raise ValueError(f"{op}: zoneout_c is for cell='lstm' only")
        if candidate_mask is not None and cell not in ("lstm", "gru"):
            raise ValueError(f"{op}: candidate_mask (recurrent dropout) is for cell='lstm' and 'gru' only")
        self.zoneout_h = _opmath_arg(op, "zoneout_h", zoneout_h, like, [steps, batch, state])
        self.zoneout_c = _opmath_arg(op, "zoneout_c", zoneout_c, like, [steps, batch, H])
        self.mask = _opmath_arg(op, "candidate_mask", candidate_mask, like, [steps, batch, H])
        self.layout = _Layout(cell, H, self.norm_h, self.norm_c)
        self.acc = _opmath(like.dtype)
        # what absent tensors are passed as (never read: their constexpr flag is off)
        self._dummy = {dtype: like.new_empty((1,), dtype=dtype) for dtype in {like.dtype, self.acc, torch.int64}}

    def ptr(self, t: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        return self._dummy[dtype] if t is None or t.numel() == 0 else t

    def flags(self) -> dict:
        return {"CELL": CELL_IDS[self.cell], "NORM_H": self.norm_h, "NORM_C": self.norm_c,
                "ZONEOUT_C": self.zoneout_c is not None, "MASK": self.mask is not None,
                "LENGTHS": self.lengths is not None, "REVERSE": self.reverse,
                "BLOCK_H": _block(self.hidden)}

    def state_flags(self) -> dict:
        return {"ZONEOUT_H": self.zoneout_h is not None, "LENGTHS": self.lengths is not None,
                "BLOCK_P": _block(self.state)}


def _block(n: int) -> int:
    return max(1, triton.next_power_of_2(n))


def _num_warps(block: int) -> int:
    return 4 if block >= 512 else 2 if block >= 128 else 1


def _launch(kernel, call: _Call, out: torch.Tensor, *args, **constexprs) -> None:
    """Runs ``kernel`` with one program per sequence; ``out`` is one of its outputs."""
    if call.batch == 0 or (out.device.type == "cpu" and is_fake(out)):
        # the interpreter runs kernels eagerly on real memory; fake tensors need no launch
        return
    block = constexprs.get("BLOCK_H", constexprs.get("BLOCK_P"))
    on_device = torch.cuda.device(out.device) if out.device.type == "cuda" else contextlib.nullcontext()
    with on_device:  # Triton launches on the current device
        torch.library.wrap_triton(kernel)[(call.batch,)](*args, **constexprs, num_warps=_num_warps(block))


FORWARD_SCHEMA = (
    "(Tensor xproj, Tensor weight_hh, Tensor? bias_hh, Tensor h0, Tensor? c0, Tensor? lengths, str cell, "
    "bool reverse, Tensor? weight_hr, Tensor? norm_h_weight, Tensor? norm_h_bias, Tensor? norm_c_weight, "
    "Tensor? norm_c_bias, float eps, Tensor? zoneout_h, Tensor? zoneout_c, Tensor? candidate_mask) "
    "-> (Tensor, Tensor, Tensor)"
)
BACKWARD_SCHEMA = (
    "(Tensor grad_states, Tensor? grad_cells, Tensor states, Tensor cells, Tensor work, Tensor weight_hh, "
    "bool has_bias_hh, Tensor? lengths, str cell, bool reverse, Tensor? weight_hr, Tensor? norm_h_weight, "
    "Tensor? norm_c_weight, Tensor? zoneout_h, Tensor? zoneout_c, Tensor? candidate_mask) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)


@torch.library.triton_op(FORWARD, mutates_args=(), schema=FORWARD_SCHEMA)
def triton_rnn_sequence(xproj, weight_hh, bias_hh, h0, c0, lengths, cell, reverse, weight_hr, norm_h_weight,
                        norm_h_bias, norm_c_weight, norm_c_bias, eps, zoneout_h, zoneout_c, candidate_mask):
    op = FORWARD
    check_float_tensor(op, "xproj", xproj)
    if xproj.dim() != 3:
        raise ValueError(f"{op}: xproj must be (T, B, G), got shape {_shape(xproj)}")
    if weight_hh.dim() != 2 or weight_hh.shape[0] != xproj.shape[2]:
        raise ValueError(f"{op}: weight_hh must be (G, P) with G = {xproj.shape[2]} (the last dim of xproj), "
                         f"got shape {_shape(weight_hh)}")
    xproj = xproj.contiguous()
    T, B, G = xproj.shape
    P = weight_hh.shape[1]
    weight_hh = _data_arg(op, "weight_hh", weight_hh, xproj, [G, P])
    c = _Call(op, xproj, T, B, G, P, cell, reverse, lengths, weight_hr is not None, norm_h_weight, norm_h_bias,
              norm_c_weight, norm_c_bias, eps, zoneout_h, zoneout_c, candidate_mask)
    H, lstm, acc, dtype = c.hidden, cell == "lstm", c.acc, xproj.dtype
    bias = None
    if bias_hh is not None:
        if c.norm_h:
            raise ValueError(f"{op}: bias_hh must be None with a recurrent layer norm (norm_h_bias replaces it)")
        bias = _data_arg(op, "bias_hh", bias_hh, xproj, [G])
    if weight_hr is not None:
        weight_hr = _data_arg(op, "weight_hr", weight_hr, xproj, [P, H])
    h_init = _data_arg(op, "h0", h0, xproj, [B, P])
    if lstm != (c0 is not None):
        raise ValueError(f"{op}: " + ("c0 is required for cell='lstm'" if lstm else "c0 is for cell='lstm' only"))
    c_init = _opmath_arg(op, "c0", c0, xproj, [B, H])

    states = xproj.new_empty((T + 1, B, P))
    states[0].copy_(h_init)
    cells = xproj.new_empty((T + 1, B, H) if lstm else (0,), dtype=acc)
    if lstm:
        cells[0].copy_(c_init)
    work = xproj.new_empty((T, B, c.layout.width), dtype=acc)
    pre = xproj.new_empty((B, G))
    candidate = xproj.new_empty((B, H), dtype=acc)
    # with a projection: h~ = (o * u) @ weight_hr.T, in the data's dtype, then in U for the kernels
    same_type = acc == dtype
    projected = xproj.new_empty((B, P), dtype=acc) if c.proj else None
    hidden_data = xproj.new_empty((B, H)) if c.proj and not same_type else None
    projected_data = xproj.new_empty((B, P)) if c.proj and not same_type else None
    weight_hh_t = weight_hh.t()
    eps_hi, eps_lo = split(c.eps)
    cell_args = (c.ptr(c.zoneout_c, acc), c.ptr(c.mask, acc), c.ptr(c.norm_h_weight, acc),
                 c.ptr(c.norm_h_bias, acc), c.ptr(c.norm_c_weight, acc), c.ptr(c.norm_c_bias, acc),
                 c.ptr(c.lengths, torch.int64))
    for s in range(T):
        h_prev = states[s]
        if bias is not None:
            torch.addmm(bias, h_prev, weight_hh_t, out=pre)
        else:
            torch.mm(h_prev, weight_hh_t, out=pre)
        _launch(cell_forward_kernel, c, work, xproj, pre, states, c.ptr(cells, acc), work, candidate, *cell_args,
                s, T, B, H, P, eps_hi, eps_lo, **c.flags())
        state_candidate = candidate
        if c.proj:
            if same_type:
                torch.mm(candidate, weight_hr.t(), out=projected)
            else:
                hidden_data.copy_(candidate)
                torch.mm(hidden_data, weight_hr.t(), out=projected_data)
                projected.copy_(projected_data)
            state_candidate = projected
        _launch(state_forward_kernel, c, states, states, state_candidate, c.ptr(c.zoneout_h, acc),
                c.ptr(c.lengths, torch.int64), s, T, B, P, **c.state_flags())
    return states, cells, work


@torch.library.triton_op(BACKWARD, mutates_args=(), schema=BACKWARD_SCHEMA)
def triton_rnn_sequence_backward(grad_states, grad_cells, states, cells, work, weight_hh, has_bias_hh, lengths, cell,
                                 reverse, weight_hr, norm_h_weight, norm_c_weight, zoneout_h, zoneout_c,
                                 candidate_mask):
    op = BACKWARD
    check_float_tensor(op, "states", states)
    if states.dim() != 3 or states.shape[0] < 1:
        raise ValueError(f"{op}: states must be (T + 1, B, P), got shape {_shape(states)}")
    if weight_hh.dim() != 2:
        raise ValueError(f"{op}: weight_hh must be (G, P), got shape {_shape(weight_hh)}")
    T, B, P = states.shape[0] - 1, states.shape[1], states.shape[2]
    G = weight_hh.shape[0]
    weight_hh = _data_arg(op, "weight_hh", weight_hh, states, [G, P])
    # norm biases are not needed here: pass the weights for both, as the forward checks pairs
    c = _Call(op, states, T, B, G, P, cell, reverse, lengths, weight_hr is not None, norm_h_weight, norm_h_weight,
              norm_c_weight, norm_c_weight, 1.0, zoneout_h, zoneout_c, candidate_mask)
    H, lstm, acc, dtype, lay = c.hidden, cell == "lstm", c.acc, states.dtype, c.layout
    grad_states = _data_arg(op, "grad_states", grad_states, states, list(states.shape))
    if work.dtype != acc or list(work.shape) != [T, B, lay.width]:
        raise ValueError(f"{op}: work must be the ({T}, {B}, {lay.width}) {acc} tensor rnn_sequence returned, "
                         f"got {work.dtype} {_shape(work)}")
    if lstm and (cells.dtype != acc or list(cells.shape) != [T + 1, B, H]):
        raise ValueError(f"{op}: cells must be the ({T + 1}, {B}, {H}) {acc} tensor rnn_sequence returned")
    grad_c = None
    if lstm and grad_cells is not None:
        grad_c = _opmath_arg(op, "grad_cells", grad_cells, states, list(cells.shape))
    if weight_hr is not None:
        weight_hr = _data_arg(op, "weight_hr", weight_hr, states, [P, H])
    work, cells, states = work.contiguous(), cells.contiguous(), states.contiguous()

    dxproj = states.new_empty((T, B, G))
    dpre = states.new_empty((T, B, G))
    drec = states.new_empty((T, B, G), dtype=acc) if c.norm_h else None
    dc_hat = states.new_empty((T, B, H), dtype=acc) if c.norm_c else None
    carry_h = states.new_zeros((B, P), dtype=acc)
    carry_c = states.new_zeros((B, H), dtype=acc) if lstm else None
    gemm_h = states.new_zeros((B, P))  # zeros at the last step, where C++ passes no GEMM
    same_type = acc == dtype
    # with a projection, d h~ of every step is kept (in the data's dtype) for weight_hr's gradient
    d_candidate_all = states.new_empty((T, B, P)) if c.proj else None
    d_candidate = states.new_empty((B, P), dtype=acc) if not c.proj or not same_type else None
    d_hidden = states.new_empty((B, H), dtype=acc) if c.proj else None
    d_hidden_data = states.new_empty((B, H)) if c.proj and not same_type else None

    lengths_ptr = c.ptr(c.lengths, torch.int64)
    cell_args = (c.ptr(grad_c, acc), c.ptr(carry_c, acc), carry_h, states, c.ptr(cells, acc), work, dxproj, dpre,
                 c.ptr(drec, acc), c.ptr(dc_hat, acc), c.ptr(c.zoneout_c, acc), c.ptr(c.mask, acc),
                 c.ptr(c.norm_h_weight, acc), c.ptr(c.norm_c_weight, acc), lengths_ptr)
    for s in range(T - 1, -1, -1):
        if c.proj and same_type:
            d_cand, d_cand_offset = d_candidate_all, s * B * P
        else:
            d_cand, d_cand_offset = d_candidate, 0
        _launch(state_backward_kernel, c, carry_h, grad_states, gemm_h, carry_h, d_cand, d_cand_offset,
                c.ptr(c.zoneout_h, acc), lengths_ptr, s, T, B, P, **c.state_flags())
        if c.proj:
            if same_type:
                torch.mm(d_candidate_all[s], weight_hr, out=d_hidden)
            else:
                d_candidate_all[s].copy_(d_candidate)
                torch.mm(d_candidate_all[s], weight_hr, out=d_hidden_data)
                d_hidden.copy_(d_hidden_data)
        _launch(cell_backward_kernel, c, dxproj, d_hidden if c.proj else d_candidate, *cell_args,
                s, T, B, H, P, **c.flags(), GRAD_C=grad_c is not None)
        torch.mm(dpre[s], weight_hh, out=gemm_h)

    dh0 = carry_h + grad_states[0]
    if T > 0:
        dh0 += gemm_h
    if lstm:
        dc0 = carry_c if grad_c is None else carry_c + grad_c[0]
    else:
        dc0 = states.new_empty((0,), dtype=acc)
    flat = lambda t: t.reshape(T * B, t.shape[2])  # noqa: E731
    dweight_hh = torch.mm(flat(dpre).t(), flat(states[:T]))
    if has_bias_hh and not c.norm_h:
        dbias_hh = dpre.sum((0, 1), dtype=acc).to(dtype)
    else:
        dbias_hh = states.new_empty((0,))
    dweight_hr = states.new_empty((0,))
    if c.proj:
        hidden = work[:, :, 3 * H:4 * H] * work[:, :, lay.extra:lay.extra + H]  # o * u
        dweight_hr = torch.mm(flat(d_candidate_all).t(), flat(hidden.to(dtype)))
    dnh_w, dnh_b = states.new_empty((0,), dtype=acc), states.new_empty((0,), dtype=acc)
    if c.norm_h:
        dnh_w = (drec * work[:, :, lay.xh:lay.xh + G]).sum((0, 1))
        dnh_b = drec.sum((0, 1))
    dnc_w, dnc_b = states.new_empty((0,), dtype=acc), states.new_empty((0,), dtype=acc)
    if c.norm_c:
        dnc_w = (dc_hat * work[:, :, lay.xc:lay.xc + H]).sum((0, 1))
        dnc_b = dc_hat.sum((0, 1))
    return dxproj, dweight_hh, dbias_hh, dh0.to(dtype), dc0, dweight_hr, dnh_w, dnh_b, dnc_w, dnc_b


def forward_op():
    return torch.ops.medkern.triton_rnn_sequence.default


def backward_op():
    return torch.ops.medkern.triton_rnn_sequence_backward.default


# The shape functions of medkern.ops.rnn (also the C++ ops'): shape propagation need not run
# the host loop step by step.
torch.library.register_fake(FORWARD)(fake_forward)
torch.library.register_fake(BACKWARD)(fake_backward)
register_autograd(FORWARD, BACKWARD)


# --- the variants compiled ahead of time (medkern.triton.aot) ----------------------------------
# Per data dtype (float32, float16, bfloat16: the math is float32 in all three, they differ in
# loads and stores) and hidden size: each cell plain and with every option it takes (layer
# norms, masks, lengths, reverse) for the cell kernels, and both zoneout modes of the state
# kernels (with lengths, the superset). float32 at two hidden sizes, the half types at one.
_AOT_SIZES = {torch.float32: (64, 512), torch.float16: (256,), torch.bfloat16: (256,)}
_POINTER = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
# pointers in the data's dtype (the others are the op-math type U, lengths int64)
_DATA_POINTERS = {
    cell_forward_kernel: ("xproj_ptr", "pre_ptr", "states_ptr"),
    state_forward_kernel: ("states_ptr",),
    state_backward_kernel: ("grad_ptr", "gemm_ptr"),
    cell_backward_kernel: ("states_ptr", "dxproj_ptr", "dpre_ptr"),
}


def _signature(kernel, dtype: torch.dtype) -> dict:
    def of(name, annotation):
        if "constexpr" in str(annotation):
            return "constexpr"
        if name == "lengths_ptr":
            return "*i64"
        if name.endswith("_ptr"):
            return _POINTER[dtype] if name in _DATA_POINTERS[kernel] else _POINTER[_opmath(dtype)]
        return "fp32" if name.startswith("eps") else "i64"

    params = inspect.signature(kernel.fn).parameters
    return {name: of(name, p.annotation) for name, p in params.items()}


def _cell_modes():
    """(label, constexprs) of the cell kernels' variants: every cell plain, and with all its options."""
    plain = dict(NORM_H=False, NORM_C=False, ZONEOUT_C=False, MASK=False, LENGTHS=False, REVERSE=False)
    full = {
        "lstm": dict(NORM_H=True, NORM_C=True, ZONEOUT_C=True, MASK=True, LENGTHS=True, REVERSE=True),
        "gru": dict(plain, NORM_H=True, MASK=True, LENGTHS=True, REVERSE=True),
        "rnn_tanh": dict(plain, NORM_H=True, LENGTHS=True, REVERSE=True),
        "rnn_relu": dict(plain, NORM_H=True, LENGTHS=True, REVERSE=True),
    }
    for cell in CELLS:
        yield f"{cell}", dict(plain, CELL=CELL_IDS[cell])
        yield f"{cell},all_options", dict(full[cell], CELL=CELL_IDS[cell])


def aot_variants():
    for dtype, sizes in _AOT_SIZES.items():
        for hidden in sizes:
            where = f"H={hidden},{_POINTER[dtype][1:]}"
            block = {"BLOCK_H": _block(hidden)}
            variants = []
            for label, flags in _cell_modes():
                variants.append((cell_forward_kernel, label, {**flags, **block}))
                variants.append((cell_backward_kernel, label, {**flags, **block, "GRAD_C": flags["CELL"] == 0}))
            for zoneout in (False, True):
                flags = {"ZONEOUT_H": zoneout, "LENGTHS": zoneout, "BLOCK_P": _block(hidden)}
                label = "zoneout,lengths" if zoneout else "plain"
                variants.append((state_forward_kernel, label, flags))
                variants.append((state_backward_kernel, label, flags))
            for kernel, label, constexprs in variants:
                name = f"rnn.{kernel.__name__}[{label},{where}]"
                yield name, kernel, _signature(kernel, dtype), constexprs
