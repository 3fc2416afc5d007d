"""Recurrent sequences in plain PyTorch: the oracle of medkern's fused RNN kernels, and their fallback.

One call runs one layer in one direction over a whole sequence whose input projection
``xproj = x @ weight_ih.T + bias_ih`` (T, B, G) is already computed (for the layer-norm variants,
already normalized: see medkern.ops.rnn). Per step s, for each sequence b:

    hp = h[s]                                           previous state (B, P)
    r  = hp @ weight_hh.T + bias_hh                     recurrent pre-activation (B, G)
         or LN(hp @ weight_hh.T) * norm_h_weight + norm_h_bias  (layer-norm variants: over all G)
    xs = xproj[t]   with t = s, or t = len_b - 1 - s when reverse (each sequence reversed in place)

    lstm (G = 4H, order i, f, g, o):
        i, f, o = sigmoid(xs + r);   g = tanh(xs + r) * m          (m: candidate mask, or 1)
        c_new = f * c[s] + i * g
        u = tanh(LN(c_new) * norm_c_weight + norm_c_bias)   or tanh(c_new)
        cand = (o * u) @ weight_hr.T   (proj_size)          or o * u
        c[s+1] = zc * c[s] + (1 - zc) * c_new               (zc: cell zoneout, or 0)
    gru (G = 3H, order r, z, n):
        rg, z = sigmoid(xs + r);   n = tanh(xs_n + rg * r_n) * m
        cand = (1 - z) * n + z * hp
    rnn_tanh / rnn_relu (G = H):
        cand = act(xs + r)

    h[s+1] = zh * hp + (1 - zh) * cand                      (zh: hidden zoneout, or 0)

Steps at or past a sequence's end (s >= len_b) leave its state untouched: h[s+1] = h[s] and
c[s+1] = c[s]. Zoneout and candidate masks (T, B, H or P) are drawn by the caller and indexed by
step, so kernel and reference see the same randomness; in eval, pass the zoneout probability
itself as the mask (the expectation).

Returns (states, cells): states (T + 1, B, P) with states[0] = h0 (x's dtype), cells (T + 1, B, H)
with cells[0] = c0 (float32 for half inputs; empty for gru and rnn). The outputs a user sees
(y, h_n, c_n) are read from them by medkern.ops.rnn.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .activations import activation

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """Where the cell state, gate math and statistics are kept: float32 for half inputs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def time_index(step: int, lengths: Optional[torch.Tensor], batch: int, reverse: bool, device) -> torch.Tensor:
    """The time each sequence reads at ``step``: s, or len_b - 1 - s while s < len_b if reverse."""
    s = torch.full((batch,), step, dtype=torch.long, device=device)
    if not reverse:
        return s
    if lengths is None:
        raise ValueError("time_index: reverse needs the sequence length")
    lengths = lengths.to(device=device, dtype=torch.long)
    return torch.where(s < lengths, lengths - 1 - s, s)


def active_rows(step: int, lengths: Optional[torch.Tensor], batch: int, device) -> torch.Tensor:
    """(B, 1) bool: which sequences still run at ``step``."""
    if lengths is None:
        return torch.ones(batch, 1, dtype=torch.bool, device=device)
    return (lengths.to(device) > step).view(batch, 1)


def _layer_norm(v: torch.Tensor, weight, bias, eps: float) -> torch.Tensor:
    return F.layer_norm(v, v.shape[-1:], weight.to(v.dtype), bias.to(v.dtype), eps)


def rnn_sequence(
    xproj: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_hh: Optional[torch.Tensor],
    h0: torch.Tensor,
    c0: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor],
    cell: str,
    reverse: bool = False,
    weight_hr: Optional[torch.Tensor] = None,
    norm_h_weight: Optional[torch.Tensor] = None,
    norm_h_bias: Optional[torch.Tensor] = None,
    norm_c_weight: Optional[torch.Tensor] = None,
    norm_c_bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    zoneout_h: Optional[torch.Tensor] = None,
    zoneout_c: Optional[torch.Tensor] = None,
    candidate_mask: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(states, cells) of one layer and direction; see the module doc for the formulas."""
    T, B, _ = xproj.shape
    acc = opmath_dtype(xproj.dtype)
    device = xproj.device
    rows = torch.arange(B, device=device)
    if reverse and lengths is None:
        lengths = torch.full((B,), T, dtype=torch.long)
    states = [h0]
    cells = [c0.to(acc)] if cell == "lstm" else []
    for s in range(T):
        hp = states[-1]
        active = active_rows(s, lengths, B, device)
        xs = xproj[time_index(s, lengths, B, reverse, device), rows].to(acc)
        pre = hp @ weight_hh.t()
        if norm_h_weight is not None:
            rec = _layer_norm(pre.to(acc), norm_h_weight, norm_h_bias, eps)
        else:
            rec = pre.to(acc) if bias_hh is None else (pre + bias_hh.to(pre.dtype)).to(acc)
        mask = None if candidate_mask is None else candidate_mask[s].to(acc)
        if cell == "lstm":
            z = xs + rec
            i, f, g, o = z.chunk(4, dim=1)
            i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
            if mask is not None:
                g = g * mask
            cp = cells[-1]
            c_new = f * cp + i * g
            u = torch.tanh(c_new if norm_c_weight is None else _layer_norm(c_new, norm_c_weight, norm_c_bias, eps))
            cand = o * u
            if weight_hr is not None:
                cand = (cand.to(xproj.dtype) @ weight_hr.t()).to(acc)
            c_next = c_new if zoneout_c is None else zoneout_c[s].to(acc) * cp + (1 - zoneout_c[s].to(acc)) * c_new
            cells.append(torch.where(active, c_next, cp))
        elif cell == "gru":
            xr, xz, xn = xs.chunk(3, dim=1)
            rr, rz, rn = rec.chunk(3, dim=1)
            rg, z = torch.sigmoid(xr + rr), torch.sigmoid(xz + rz)
            n = torch.tanh(xn + rg * rn)
            if mask is not None:
                n = n * mask
            cand = (1 - z) * n + z * hp.to(acc)
        else:
            cand = activation(xs + rec, "tanh" if cell == "rnn_tanh" else "relu", 0.0)
        if zoneout_h is not None:
            zh = zoneout_h[s].to(acc)
            cand = zh * hp.to(acc) + (1 - zh) * cand
        states.append(torch.where(active, cand.to(h0.dtype), hp))
    cells_out = torch.stack(cells) if cells else xproj.new_empty((0,), dtype=acc)
    return torch.stack(states), cells_out
