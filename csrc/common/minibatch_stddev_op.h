#pragma once
// Host-side argument handling of medkern::minibatch_stddev and medkern::minibatch_stddev_backward,
// shared by the CPU and CUDA registrations: checks, the memory format of the outputs (that of x:
// channels_last if x is channels_last and not contiguous, else contiguous; the fake kernels in
// medkern/ops/minibatch_stddev.py allocate the same), inputs brought to it, and the strides the
// kernels index with (csrc/common/minibatch_stddev.h).

#include <ATen/ATen.h>

#include <algorithm>

#include "checks.h"
#include "layout.h"
#include "minibatch_stddev.h"

namespace medkern {

inline at::MemoryFormat minibatch_stddev_format(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast) ? at::MemoryFormat::ChannelsLast
                                                                              : at::MemoryFormat::Contiguous;
}

// The shape, group and strides of a call; x checked.
inline MinibatchStddevShape check_minibatch_stddev_args(const char* op, const at::Tensor& x, int64_t group_size,
                                                        int64_t num_channels) {
  check_floating(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x must be 4-d (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK_VALUE(group_size >= 1, op, ": group_size must be >= 1, got ", group_size);
  TORCH_CHECK_VALUE(num_channels >= 1, op, ": num_channels must be >= 1, got ", num_channels);
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  TORCH_CHECK_VALUE(c > 0 && c % num_channels == 0, op, ": x.shape[1] (C = ", c,
                    ") must be a positive multiple of num_channels = ", num_channels);
  const int64_t group = std::min(group_size, n);
  TORCH_CHECK_VALUE(n == 0 || n % group == 0, op, ": x.shape[0] (N = ", n,
                    ") must be divisible by the group size min(group_size, N) = ", group);
  const int64_t oc = c + num_channels;
  const bool last = minibatch_stddev_format(x) == at::MemoryFormat::ChannelsLast;
  MinibatchStddevShape s{n, c, hw, group, group > 0 ? n / group : 0, num_channels, 0, 0, 0, 0, 0, 0};
  if (last) {
    s.x_sn = hw * c, s.x_sc = 1, s.x_shw = c;
    s.o_sn = hw * oc, s.o_sc = 1, s.o_shw = oc;
  } else {
    s.x_sn = c * hw, s.x_sc = hw, s.x_shw = 1;
    s.o_sn = oc * hw, s.o_sc = hw, s.o_shw = 1;
  }
  return s;
}

// run(x, out, shape): out[:, :C] is x already; run fills out[:, C:] (non-empty tensors only).
template <typename Run>
at::Tensor minibatch_stddev_op(const at::Tensor& x, int64_t group_size, int64_t num_channels, Run&& run) {
  const MinibatchStddevShape s = check_minibatch_stddev_args("medkern::minibatch_stddev", x, group_size, num_channels);
  const at::MemoryFormat format = minibatch_stddev_format(x);
  at::Tensor out = at::empty({x.size(0), x.size(1) + num_channels, x.size(2), x.size(3)},
                             x.options().memory_format(format));
  if (out.numel() == 0) return out;
  const at::Tensor xd = x.contiguous(format);
  out.narrow(1, 0, s.c).copy_(xd);
  run(xd, out, s);
  return out;
}

// run(grad, x, gx, shape) with grad and x in the format of x (non-empty tensors only).
template <typename Run>
at::Tensor minibatch_stddev_backward_op(const at::Tensor& grad, const at::Tensor& x, int64_t group_size,
                                        int64_t num_channels, Run&& run) {
  const char* op = "medkern::minibatch_stddev_backward";
  const MinibatchStddevShape s = check_minibatch_stddev_args(op, x, group_size, num_channels);
  check_same_device(op, "grad", grad, x);
  check_same_dtype(op, "grad", grad, x);
  const at::MemoryFormat format = minibatch_stddev_format(x);
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == x.size(0) && grad.size(1) == x.size(1) + num_channels &&
                        grad.size(2) == x.size(2) && grad.size(3) == x.size(3),
                    op, ": grad must have shape (N, C + num_channels, H, W) = (", x.size(0), ", ",
                    x.size(1) + num_channels, ", ", x.size(2), ", ", x.size(3), "), got ", grad.sizes());
  at::Tensor gx = at::empty(x.sizes(), x.options().memory_format(format));
  if (gx.numel() == 0) return gx;
  const at::Tensor gd = grad.contiguous(format);
  run(gd, x.contiguous(format), gx, s);
  return gx;
}

}  // namespace medkern
