"""medkern.ops.conv_act and conv_transpose_act: convolution + bias + residual + activation.

    y = act(conv(x, weight) + bias + residual, alpha)

The convolution is the library's (oneDNN on CPU, cuDNN on CUDA, through ATen); the epilogue is
medkern's fused ``bias_act`` (one pass forward; one pass backward that also sums the bias
gradient, so the convolution's backward skips its own bias pass). Where no gradient is needed
on CPU, the activation runs inside oneDNN's convolution as a post-op instead, so the output is
written once. Channels-last inputs stay channels-last throughout.

On the triton backend (``backend.select("bias_act", ...)`` choosing "triton": asked for by name,
or on a GPU without medkern's CUDA kernels) ``conv_act`` runs ``medkern::triton_conv_act``
(medkern/triton/conv_act.py): an implicit-GEMM convolution with bias, residual and activation
applied before its single store. ``conv_transpose_act`` stays on the library convolution there
(with the Triton bias_act epilogue): there is no Triton transposed convolution.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .. import activations, backend
from ..reference import conv_act as reference
from .bias_act import bias_act

OP = "medkern.ops.conv_act"
OP_TRANSPOSE = "medkern.ops.conv_transpose_act"

# oneDNN post-ops computing exactly medkern's activation: name -> (attr, scalars(alpha), algorithm)
_ONEDNN_POST_OPS = {
    "linear": ("none", lambda alpha: [], ""),
    "relu": ("relu", lambda alpha: [], ""),
    "lrelu": ("leaky_relu", lambda alpha: [alpha], ""),
    "tanh": ("tanh", lambda alpha: [], ""),
    "sigmoid": ("sigmoid", lambda alpha: [], ""),
    "silu": ("swish", lambda alpha: [], ""),
    "gelu": ("gelu", lambda alpha: [], "none"),
}


def _check(op, x, weight, bias, residual, groups):
    """Checks the tensors; returns (channel dim of x, spatial rank)."""
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
    rank = weight.dim() - 2
    if rank not in (1, 2, 3):
        raise ValueError(f"{op}: weight must be 3-d, 4-d or 5-d (a 1d, 2d or 3d convolution), got shape {tuple(weight.shape)}")
    if x.dim() not in (rank + 1, rank + 2):
        raise ValueError(f"{op}: x must be {rank + 2}-d (batched) or {rank + 1}-d (unbatched) for a {rank}d "
                         f"convolution, got shape {tuple(x.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    for name, t in (("bias", bias), ("residual", residual)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t is not None and (t.device != x.device or t.dtype != x.dtype):
            raise TypeError(f"{op}: {name} must have x's dtype and device ({x.dtype}, {x.device}), "
                            f"got {t.dtype} on {t.device}")
    if weight.device != x.device or weight.dtype != x.dtype:
        raise TypeError(f"{op}: weight must have x's dtype and device ({x.dtype}, {x.device}), "
                        f"got {weight.dtype} on {weight.device}")
    return x.dim() - rank - 1, rank


def _explicit_padding(padding, weight, dilation, rank) -> Optional[list[int]]:
    """padding as a per-dim list for oneDNN, or None where it has no symmetric equivalent."""
    dilation = [dilation] * rank if isinstance(dilation, int) else list(dilation)
    if padding == "valid":
        return [0] * rank
    if padding == "same":
        total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        return None if any(t % 2 for t in total) else [t // 2 for t in total]
    return [padding] * rank if isinstance(padding, int) else list(padding)


def _onednn_fusable(x, weight, bias, residual, act, channel_dim) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and act in _ONEDNN_POST_OPS
        and residual is None
        and channel_dim == 1
        and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)))
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.compiler.is_compiling()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def _as_list(value, rank) -> list[int]:
    return [value] * rank if isinstance(value, int) else list(value)


def conv_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: Union[int, Sequence[int]] = 1,
    padding: Union[int, Sequence[int], str] = 0,
    dilation: Union[int, Sequence[int]] = 1,
    groups: int = 1,
    act: str = "relu",
    alpha: Optional[float] = None,
    residual: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``act(conv(x, weight) + bias + residual)``; 1d, 2d or 3d by weight's rank.

    Arguments are torch.nn.functional.conv{1,2,3}d's (padding may be an int, a sequence, "same"
    or "valid"), then the activation (``medkern.activations``) and an optional residual of the
    output's shape, added before the activation (a ResNet block's skip connection).
    """
    spec = activations.get(act, OP)
    act, alpha = spec.name, activations.resolve_alpha(spec, alpha, OP)
    channel_dim, rank = _check(OP, x, weight, bias, residual, groups)
    chosen = backend.select("bias_act", x.device)
    if chosen == "reference":
        return reference.conv_act(x, weight, bias, stride, padding, dilation, groups, act, alpha, residual)
    if chosen == "triton":
        return _triton_conv_act(x, weight, bias, stride, padding, dilation, groups, act, alpha, residual, rank)
    if _onednn_fusable(x, weight, bias, residual, act, channel_dim):
        pad = _explicit_padding(padding, weight, dilation, rank)
        if pad is not None:
            attr, scalars, algorithm = _ONEDNN_POST_OPS[act]
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, bias, pad, _as_list(stride, rank), _as_list(dilation, rank), groups, attr, scalars(alpha),
                algorithm)
    z = reference.CONV[rank](x, weight, None, stride, padding, dilation, groups)
    if residual is not None:
        z = z + residual
    return bias_act(z, bias, channel_dim, act, alpha if spec.takes_alpha else None)


def _triton_arguments(x, weight, stride, padding, dilation, rank):
    """(x, stride, padding, dilation) for medkern::triton_conv_act: ints as per-dim lists and
    padding explicit and symmetric. padding="same" with an odd total padding in some dim pads x
    by the extra element at the end first, as torch's convolution does."""
    stride, dilation = _as_list(stride, rank), _as_list(dilation, rank)
    if padding == "valid":
        return x, stride, [0] * rank, dilation
    if padding == "same":
        if any(s != 1 for s in stride):
            raise ValueError(f"{OP}: padding='same' is not supported for strided convolutions, got stride={stride}")
        total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        extra = [t % 2 for t in total]
        if any(extra):
            pad = [v for e in reversed(extra) for v in (0, e)]  # F.pad's order: last dim first
            x = torch.nn.functional.pad(x, pad)
        return x, stride, [t // 2 for t in total], dilation
    if isinstance(padding, str):
        raise ValueError(f"{OP}: padding must be an int, a sequence of ints, 'same' or 'valid', got {padding!r}")
    return x, stride, _as_list(padding, rank), dilation


def _triton_conv_act(x, weight, bias, stride, padding, dilation, groups, act, alpha, residual, rank):
    backend.check_traceable(OP, "triton", x.device)
    from ..triton import conv_act as triton_conv_act

    unbatched = x.dim() == rank + 1
    if unbatched:
        x = x.unsqueeze(0)
    x, stride, padding, dilation = _triton_arguments(x, weight, stride, padding, dilation, rank)
    if residual is not None:
        spatial = [(i + 2 * p - d * (k - 1) - 1) // s + 1
                   for i, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation)]
        shape = (x.shape[0], weight.shape[0], *spatial)
        try:  # broadcast as the reference's ``z + residual`` does (autograd sums the gradient back)
            residual = torch.broadcast_to(residual, shape[1:] if unbatched else shape)
        except RuntimeError:
            raise ValueError(f"{OP}: residual of shape {tuple(residual.shape)} does not broadcast to the output's "
                             f"shape {shape[1:] if unbatched else shape}") from None
        if unbatched:
            residual = residual.unsqueeze(0)
    y = triton_conv_act.forward_op()(x, weight, bias, stride, padding, dilation, groups, act, alpha, residual)
    return y.squeeze(0) if unbatched else y


def conv_transpose_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: Union[int, Sequence[int]] = 1,
    padding: Union[int, Sequence[int]] = 0,
    output_padding: Union[int, Sequence[int]] = 0,
    groups: int = 1,
    dilation: Union[int, Sequence[int]] = 1,
    act: str = "relu",
    alpha: Optional[float] = None,
    residual: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``act(conv_transpose(x, weight) + bias + residual)``; arguments in the order of
    torch.nn.functional.conv_transpose{1,2,3}d's, then as :func:`conv_act`.

    Every backend runs the library's transposed convolution (on the triton backend, followed by
    the Triton bias_act epilogue): there is no Triton transposed convolution."""
    spec = activations.get(act, OP_TRANSPOSE)
    act, alpha = spec.name, activations.resolve_alpha(spec, alpha, OP_TRANSPOSE)
    channel_dim, rank = _check(OP_TRANSPOSE, x, weight, bias, residual, groups)
    if backend.select("bias_act", x.device) == "reference":
        return reference.conv_transpose_act(x, weight, bias, stride, padding, output_padding, groups, dilation, act,
                                            alpha, residual)
    z = reference.CONV_TRANSPOSE[rank](x, weight, None, stride, padding, output_padding, groups, dilation)
    if residual is not None:
        z = z + residual
    return bias_act(z, bias, channel_dim, act, alpha if spec.takes_alpha else None)


__all__ = ["conv_act", "conv_transpose_act"]
