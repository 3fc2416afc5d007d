"""medkern.ops.rnn: fused recurrent sequences (LSTM, GRU, Elman RNN; layer-norm variants).

``rnn_layer`` runs one layer in one direction: the input projection of all steps as one GEMM
(``F.linear``, or oneDNN's where MKL is slow: medkern/ops/projection.py; its autograd gives the
input and ``weight_ih`` gradients as GEMMs over the whole sequence), then ``rnn_sequence``, the recurrence: per step one GEMM ``h @ weight_hh.T`` and one
fused pointwise kernel for all gates (and the layer norms), and in backward per step one GEMM
and one fused kernel, with ``weight_hh``'s gradient as one GEMM over the sequence. Formulas:
medkern/reference/rnn.py.

Variable lengths (``lengths``): steps past a sequence's end leave its state and gradient
untouched, and its outputs there are zero (as ``pad_packed_sequence`` pads). ``reverse`` runs
each sequence backwards within its own length (the second direction of a bidirectional layer).

Autograd keeps the per-step gates (``work``), the states and, for second-order gradients, the
input projection. First-order gradients come from the fused backward kernel; second-order ones
differentiate that kernel's result through the reference (exact, same formulas).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .. import _extension, backend
from .._args import check_companion, check_float_tensor
from ..reference import rnn as reference
from ..reference.rnn import CELLS, GATES, opmath_dtype
from .projection import project

OP = "medkern.ops.rnn_sequence"
DEFAULT_EPS = 1e-5


def work_width(cell: str, hidden: int, norm_h: bool, norm_c: bool) -> int:
    """Columns of the ``work`` tensor per (step, sequence): WorkLayout of csrc/common/rnn.h."""
    gates = GATES[cell] * hidden
    width = gates + (hidden if cell in ("lstm", "gru") else 0)
    if norm_h:
        width += gates + 1
    if norm_c:
        width += hidden + 1
    return width


def _check_tensor(name: str, t, like: torch.Tensor, shape: Sequence[int], allow_opmath: bool = False) -> None:
    if not check_companion(OP, name, t, like, "xproj", allow_float32=allow_opmath):
        return
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{OP}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_pair(name: str, pair, like: torch.Tensor, size: int):
    if pair is None:
        return None, None
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"{OP}: {name} must be a (weight, bias) pair of tensors or None, got {type(pair).__name__}")
    _check_tensor(f"{name} weight", pair[0], like, (size,), allow_opmath=True)
    _check_tensor(f"{name} bias", pair[1], like, (size,), allow_opmath=True)
    return pair[0], pair[1]


def check_lengths(lengths, steps: int, batch: int) -> Optional[torch.Tensor]:
    """lengths as an int64 tensor (on the CPU, where torch keeps PackedSequence's), checked."""
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8) or lengths.dim() != 1:
        raise TypeError(f"{OP}: lengths must be a 1-d integer tensor, got {lengths.dtype} of shape {tuple(lengths.shape)}")
    if lengths.shape[0] != batch:
        raise ValueError(f"{OP}: lengths must have {batch} elements (the batch), got {lengths.shape[0]}")
    if batch and not torch.compiler.is_compiling():
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 0 or hi > steps:
            raise ValueError(f"{OP}: lengths must lie in [0, {steps}] (the steps of xproj), got values in [{lo}, {hi}]")
    return lengths.to(torch.int64)


def check_args(xproj, weight_hh, bias_hh, h0, c0, cell, lengths, weight_hr, norm_h, norm_c, eps,
               zoneout_h, zoneout_c, candidate_mask):
    """Checks what rnn_sequence takes; returns (hidden, lengths, norm_h pair, norm_c pair)."""
    check_float_tensor(OP, "xproj", xproj)
    if xproj.dim() != 3:
        raise ValueError(f"{OP}: xproj must be (T, B, G), got shape {tuple(xproj.shape)}")
    if cell not in CELLS:
        raise ValueError(f"{OP}: unknown cell={cell!r}; expected one of {', '.join(CELLS)}")
    T, B, G = xproj.shape
    if G % GATES[cell]:
        raise ValueError(f"{OP}: the last dim of xproj ({G}) must be {GATES[cell]} * hidden_size for cell={cell!r}")
    H = G // GATES[cell]
    if not isinstance(weight_hh, torch.Tensor) or weight_hh.dim() != 2 or weight_hh.shape[0] != G:
        shape = tuple(weight_hh.shape) if isinstance(weight_hh, torch.Tensor) else type(weight_hh).__name__
        raise ValueError(f"{OP}: weight_hh must be a (G, P) tensor with G = {G}, got {shape}")
    P = weight_hh.shape[1]
    _check_tensor("weight_hh", weight_hh, xproj, (G, P))
    if weight_hr is not None and cell != "lstm":
        raise ValueError(f"{OP}: weight_hr (a projection) is for cell='lstm' only")
    if weight_hr is None and P != H:
        raise ValueError(f"{OP}: weight_hh must be ({G}, {H}) without a projection, got ({G}, {P})")
    _check_tensor("weight_hr", weight_hr, xproj, (P, H))
    nh = _check_pair("norm_h", norm_h, xproj, G)
    if norm_c is not None and cell != "lstm":
        raise ValueError(f"{OP}: norm_c (the cell-state layer norm) is for cell='lstm' only")
    nc = _check_pair("norm_c", norm_c, xproj, H)
    if bias_hh is not None and norm_h is not None:
        raise ValueError(f"{OP}: bias_hh must be None with a recurrent layer norm (norm_h's bias replaces it)")
    _check_tensor("bias_hh", bias_hh, xproj, (G,))
    if not isinstance(h0, torch.Tensor):
        raise TypeError(f"{OP}: h0 must be a torch.Tensor, got {type(h0).__name__}")
    _check_tensor("h0", h0, xproj, (B, P))
    if (cell == "lstm") != (c0 is not None):
        raise ValueError(f"{OP}: " + ("c0 is required for cell='lstm'" if cell == "lstm" else "c0 is for cell='lstm' only"))
    _check_tensor("c0", c0, xproj, (B, H), allow_opmath=True)
    if zoneout_c is not None and cell != "lstm":
        raise ValueError(f"{OP}: zoneout_c is for cell='lstm' only")
    if candidate_mask is not None and cell not in ("lstm", "gru"):
        raise ValueError(f"{OP}: candidate_mask (recurrent dropout) is for cell='lstm' and 'gru' only")
    _check_tensor("zoneout_h", zoneout_h, xproj, (T, B, P), allow_opmath=True)
    _check_tensor("zoneout_c", zoneout_c, xproj, (T, B, H), allow_opmath=True)
    _check_tensor("candidate_mask", candidate_mask, xproj, (T, B, H), allow_opmath=True)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0 or eps == float("inf"):
        raise ValueError(f"{OP}: eps must be a finite number > 0, got {eps!r}")
    return H, check_lengths(lengths, T, B), nh, nc


def rnn_sequence(
    xproj: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_hh: Optional[torch.Tensor],
    h0: torch.Tensor,
    c0: Optional[torch.Tensor] = None,
    *,
    cell: str,
    lengths: Optional[torch.Tensor] = None,
    reverse: bool = False,
    weight_hr: Optional[torch.Tensor] = None,
    norm_h: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    norm_c: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    eps: float = DEFAULT_EPS,
    zoneout_h: Optional[torch.Tensor] = None,
    zoneout_c: Optional[torch.Tensor] = None,
    candidate_mask: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence of one layer and direction: (states (T+1, B, P), cells (T+1, B, H)).

    Args:
        xproj: (T, B, G) the input projection of every step, G = gates * hidden_size
            (lstm: 4, gates i, f, g, o; gru: 3, gates r, z, n; rnn_tanh, rnn_relu: 1).
        weight_hh: (G, P); bias_hh: (G,) or None (must be None with norm_h).
        h0: (B, P); c0: (B, H), lstm only (its dtype, or float32 for half xproj).
        cell: ``lstm``, ``gru``, ``rnn_tanh`` or ``rnn_relu``.
        lengths: (B,) steps of each sequence (<= T), or None for all T.
        reverse: run each sequence from its last step to its first.
        weight_hr: (P, H) the LSTM's projection (``proj_size``), or None.
        norm_h: (weight, bias) of a layer norm over the G recurrent pre-activations; norm_c:
            (weight, bias) of a layer norm of the LSTM cell state before its tanh; eps theirs.
        zoneout_h (T, B, P), zoneout_c (T, B, H): per-step keep masks (0/1 in training, the
            zoneout probability in eval); candidate_mask (T, B, H): recurrent dropout of the
            candidate (g of LSTM, n of GRU), already scaled by 1 / (1 - p).

    Returns states with states[0] = h0 and states[s + 1] the state after step s (x's dtype), and
    cells likewise for lstm (float32 for half inputs; an empty tensor for the other cells).
    """
    xproj, weight_hh, bias_hh, h0, weight_hr = _autocast(xproj, weight_hh, bias_hh, h0, weight_hr)
    _, lengths, (nhw, nhb), (ncw, ncb) = check_args(xproj, weight_hh, bias_hh, h0, c0, cell, lengths, weight_hr,
                                                    norm_h, norm_c, eps, zoneout_h, zoneout_c, candidate_mask)
    chosen = backend.select("rnn_sequence", xproj.device)
    if chosen == "reference":
        return reference.rnn_sequence(xproj, weight_hh, bias_hh, h0, c0, lengths, cell, reverse, weight_hr, nhw, nhb,
                                      ncw, ncb, float(eps), zoneout_h, zoneout_c, candidate_mask)
    backend.check_traceable(OP, chosen, xproj.device)
    if lengths is not None:
        lengths = lengths.to(xproj.device)
    states, cells, _work = _kernel_op(chosen)(xproj, weight_hh, bias_hh, h0, c0, lengths, cell, bool(reverse),
                                              weight_hr, nhw, nhb, ncw, ncb, float(eps), zoneout_h, zoneout_c,
                                              candidate_mask)
    return states, cells


def _autocast(xproj, weight_hh, bias_hh, h0, weight_hr):
    """Under autocast the sequence runs in the autocast dtype, as torch's RNNs do: the data and
    weights are cast to it (norm parameters, c0 and masks may stay float32)."""
    if not isinstance(xproj, torch.Tensor) or not torch.is_autocast_enabled(xproj.device.type):
        return xproj, weight_hh, bias_hh, h0, weight_hr
    dtype = torch.get_autocast_dtype(xproj.device.type)
    cast = lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
    return cast(xproj), cast(weight_hh), cast(bias_hh), cast(h0), cast(weight_hr)


def _kernel_op(chosen: str):
    if chosen == "triton":
        from ..triton import rnn as triton_rnn

        return triton_rnn.forward_op()
    return torch.ops.medkern.rnn_sequence.default


def read_outputs(states: torch.Tensor, cells: torch.Tensor, lengths: Optional[torch.Tensor], reverse: bool):
    """(y (T, B, P), h_n (B, P), c_n (B, H) or None) from rnn_sequence's states and cells.

    y[t] is the state after the step that read time t, zero past each sequence's end. A
    finished sequence's state stays put, so the last row of states is every sequence's final one.
    """
    T = states.shape[0] - 1
    h_n = states[T]
    c_n = cells[T] if cells.numel() else None
    if lengths is None:
        y = states[1:].flip(0) if reverse else states[1:]
        return y, h_n, c_n
    lengths = lengths.to(states.device)
    t = torch.arange(T, device=states.device).view(T, 1)
    valid = t < lengths.view(1, -1)  # (T, B)
    if reverse:  # the step that read time t was len - 1 - t; its result is states[len - t]
        index = torch.where(valid, lengths.view(1, -1) - t, torch.zeros_like(t))
        y = states.gather(0, index.unsqueeze(-1).expand(T, -1, states.shape[2]))
    else:
        y = states[1:]
    return y * valid.unsqueeze(-1).to(y.dtype), h_n, c_n


def rnn_layer(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    bias_ih: Optional[torch.Tensor],
    weight_hh: torch.Tensor,
    bias_hh: Optional[torch.Tensor],
    h0: torch.Tensor,
    c0: Optional[torch.Tensor] = None,
    *,
    cell: str,
    lengths: Optional[torch.Tensor] = None,
    reverse: bool = False,
    weight_hr: Optional[torch.Tensor] = None,
    norm_x: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    norm_h: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    norm_c: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    eps: float = DEFAULT_EPS,
    zoneout_h: Optional[torch.Tensor] = None,
    zoneout_c: Optional[torch.Tensor] = None,
    candidate_mask: Optional[torch.Tensor] = None,
):
    """One layer in one direction over x (T, B, I): (y (T, B, P), h_n (B, P), c_n (B, H) or None).

    xproj = x @ weight_ih.T + bias_ih, layer-normalized over its G columns when norm_x is a
    (weight, bias) pair, then rnn_sequence (see there for the other arguments).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"medkern.ops.rnn_layer: x must be a (T, B, input_size) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(weight_ih, torch.Tensor) or weight_ih.dim() != 2 or weight_ih.shape[1] != x.shape[2]:
        raise ValueError(f"medkern.ops.rnn_layer: weight_ih must be (G, {x.shape[2]}) for x of input size {x.shape[2]}")
    xproj = project(x, weight_ih, bias_ih)
    if norm_x is not None:
        xproj = F.layer_norm(xproj, xproj.shape[-1:], norm_x[0].to(xproj.dtype), norm_x[1].to(xproj.dtype), eps)
    states, cells = rnn_sequence(xproj, weight_hh, bias_hh, h0, c0, cell=cell, lengths=lengths, reverse=reverse,
                                 weight_hr=weight_hr, norm_h=norm_h, norm_c=norm_c, eps=eps, zoneout_h=zoneout_h,
                                 zoneout_c=zoneout_c, candidate_mask=candidate_mask)
    return read_outputs(states, cells, None if lengths is None else check_lengths(lengths, x.shape[0], x.shape[1]),
                        reverse)


# ---- autograd and fake kernels of the compiled ops ----

# The forward op's inputs, by position.
_DIFFERENTIABLE = {"xproj": 0, "weight_hh": 1, "bias_hh": 2, "h0": 3, "c0": 4, "weight_hr": 8, "norm_h_weight": 9,
                   "norm_h_bias": 10, "norm_c_weight": 11, "norm_c_bias": 12}
# The backward op's outputs, in order, and the forward input each is the gradient of.
_GRADIENT_OF = ("xproj", "weight_hh", "bias_hh", "h0", "c0", "weight_hr", "norm_h_weight", "norm_h_bias",
                "norm_c_weight", "norm_c_bias")


def _reference_states(inputs: dict, lengths, cell, reverse, eps, masks):
    return reference.rnn_sequence(inputs["xproj"], inputs["weight_hh"], inputs["bias_hh"], inputs["h0"], inputs["c0"],
                                  lengths, cell, reverse, inputs["weight_hr"], inputs["norm_h_weight"],
                                  inputs["norm_h_bias"], inputs["norm_c_weight"], inputs["norm_c_bias"], eps, *masks)


class _DifferentiableBackward(torch.autograd.Function):
    """The fused backward, made differentiable (for double backward) through the reference."""

    @staticmethod
    def forward(ctx, backward_op, call, grad_states, grad_cells, *tensors):
        ctx.call = call
        ctx.save_for_backward(grad_states, grad_cells, *tensors)
        return tuple(backward_op(grad_states, grad_cells, **call["kernel_args"]))

    @staticmethod
    def backward(ctx, *grad_grads):
        grad_states, grad_cells, *tensors = ctx.saved_tensors
        call = ctx.call
        names = list(_DIFFERENTIABLE)
        values = dict(zip(names, tensors))
        leaves = {k: (v.detach().requires_grad_() if v is not None and v.is_floating_point() else None)
                  for k, v in values.items()}
        g_states = grad_states.detach().requires_grad_()
        g_cells = grad_cells.detach().requires_grad_() if grad_cells is not None and grad_cells.numel() else None
        asked = [(name, gg) for name, gg in zip(_GRADIENT_OF, grad_grads)
                 if leaves[name] is not None and gg is not None and gg.numel() and gg.shape == leaves[name].shape]
        if not asked:
            return (None,) * (4 + len(tensors))
        with torch.enable_grad():
            states, cells = _reference_states(leaves, call["lengths"], call["cell"], call["reverse"], call["eps"],
                                              call["masks"])
            outs, grads_out = [states], [g_states]
            if g_cells is not None:
                outs.append(cells)
                grads_out.append(g_cells)
            firsts = torch.autograd.grad(outs, [leaves[n] for n, _ in asked], grads_out, create_graph=True,
                                         allow_unused=True)
            pairs = [(f, gg) for f, (_, gg) in zip(firsts, asked) if f is not None]
            everything = [g_states] + ([g_cells] if g_cells is not None else []) + [v for v in leaves.values()
                                                                                   if v is not None]
            seconds = torch.autograd.grad([f for f, _ in pairs], everything, [gg.to(f.dtype) for f, gg in pairs],
                                          allow_unused=True) if pairs else [None] * len(everything)
        seconds = iter(seconds)
        d_states = next(seconds)
        d_cells = next(seconds) if g_cells is not None else None
        d_tensors = [next(seconds) if leaves[n] is not None else None for n in names]
        return (None, None, d_states, d_cells, *d_tensors)


def register_autograd(forward_name: str, backward_name: str) -> None:
    """Makes op ``forward_name`` (rnn_sequence's schema) differentiable through ``backward_name``."""
    backward_op = getattr(torch.ops.medkern, backward_name.split("::")[1]).default

    def setup_context(ctx, inputs, output):
        (xproj, weight_hh, bias_hh, h0, c0, lengths, cell, reverse, weight_hr, nhw, nhb, ncw, ncb, eps, zh, zc,
         mask) = inputs
        states, cells, work = output
        ctx.mark_non_differentiable(work)
        # unused outputs (work always; cells and states often) get None, not a zero-filled tensor
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(states, cells, work, lengths, zh, zc, mask,
                              *(inputs[i] for i in _DIFFERENTIABLE.values()))
        ctx.params = (cell, reverse, eps)

    def backward(ctx, grad_states, grad_cells, _grad_work):
        states, cells, work, lengths, zh, zc, mask, *tensors = ctx.saved_tensors
        cell, reverse, eps = ctx.params
        values = dict(zip(_DIFFERENTIABLE, tensors))
        if grad_states is None:
            grad_states = torch.zeros_like(states)
        if cell != "lstm" or grad_cells is None:
            grad_cells = None
        kernel_args = dict(states=states, cells=cells, work=work, weight_hh=values["weight_hh"],
                           has_bias_hh=values["bias_hh"] is not None, lengths=lengths, cell=cell, reverse=reverse,
                           weight_hr=values["weight_hr"], norm_h_weight=values["norm_h_weight"],
                           norm_c_weight=values["norm_c_weight"], zoneout_h=zh, zoneout_c=zc, candidate_mask=mask)
        if torch.is_grad_enabled():  # create_graph: keep the result differentiable
            call = dict(kernel_args=kernel_args, lengths=lengths, cell=cell, reverse=reverse, eps=eps,
                        masks=(zh, zc, mask))
            gc = grad_cells if grad_cells is not None else cells.new_zeros(0)
            grads = _DifferentiableBackward.apply(backward_op, call, grad_states, gc, *tensors)
        else:
            grads = backward_op(grad_states, grad_cells, **kernel_args)
        result = [None] * 17
        for name, grad in zip(_GRADIENT_OF, grads):
            value = values[name]
            if value is not None and ctx.needs_input_grad[_DIFFERENTIABLE[name]]:
                result[_DIFFERENTIABLE[name]] = grad.to(value.dtype)
        return tuple(result)

    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)


def fake_forward(xproj, weight_hh, bias_hh, h0, c0, lengths, cell, reverse, weight_hr, nhw, nhb, ncw, ncb, eps, zh,
                 zc, mask):
    T, B, G = xproj.shape
    H, P = G // GATES[cell], weight_hh.shape[1]
    acc = opmath_dtype(xproj.dtype)
    states = xproj.new_empty((T + 1, B, P))
    cells = xproj.new_empty((T + 1, B, H) if cell == "lstm" else (0,), dtype=acc)
    work = xproj.new_empty((T, B, work_width(cell, H, nhw is not None, ncw is not None)), dtype=acc)
    return states, cells, work


def fake_backward(grad_states, grad_cells, states, cells, work, weight_hh, has_bias_hh, lengths, cell, reverse,
                  weight_hr, nhw, ncw, zh, zc, mask):
    T, B, P = states.shape[0] - 1, states.shape[1], states.shape[2]
    G = weight_hh.shape[0]
    H = G // GATES[cell]
    acc = work.dtype
    empty = lambda dtype: states.new_empty((0,), dtype=dtype)  # noqa: E731
    return (
        states.new_empty((T, B, G)),
        states.new_empty((G, P)),
        states.new_empty((G,)) if has_bias_hh and nhw is None else empty(states.dtype),
        states.new_empty((B, P)),
        states.new_empty((B, H), dtype=acc) if cell == "lstm" else empty(acc),
        states.new_empty((P, H)) if weight_hr is not None else empty(states.dtype),
        states.new_empty((G,), dtype=acc) if nhw is not None else empty(acc),
        states.new_empty((G,), dtype=acc) if nhw is not None else empty(acc),
        states.new_empty((H,), dtype=acc) if ncw is not None else empty(acc),
        states.new_empty((H,), dtype=acc) if ncw is not None else empty(acc),
    )


def _register_compiled_ops() -> None:
    if not _extension.loaded() or not hasattr(torch.ops.medkern, "rnn_sequence"):
        return
    torch.library.register_fake("medkern::rnn_sequence")(fake_forward)
    torch.library.register_fake("medkern::rnn_sequence_backward")(fake_backward)
    register_autograd("medkern::rnn_sequence", "medkern::rnn_sequence_backward")


_register_compiled_ops()
