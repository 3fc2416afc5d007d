#pragma once
// Host-side argument handling of medkern::pixel_norm and medkern::pixel_norm_backward, shared by
// the CPU and CUDA registrations: checks, the output allocation (torch.empty_like(x), which the
// fake kernel in medkern/ops/pixel_norm.py mirrors), inputs brought to the output's layout.

#include <ATen/ATen.h>

#include <cmath>

#include "checks.h"
#include "layout.h"
#include "pixel_norm.h"

namespace medkern {

// Returns dim wrapped into [0, ndim).
inline int64_t check_pixel_norm_args(const char* op, const at::Tensor& x, int64_t dim, double eps) {
  check_floating(op, "x", x);
  const int64_t d = check_dim(op, dim, x.dim());
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  return d;
}

// run(x, y, layout, eps) with x in y's layout, on non-empty tensors.
template <typename Run>
at::Tensor pixel_norm_op(const at::Tensor& x, int64_t dim, double eps, Run&& run) {
  const int64_t d = check_pixel_norm_args("medkern::pixel_norm", x, dim, eps);
  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) run(with_layout_of(x, y), y, channel_layout(y, d), eps);
  return y;
}

// run(grad, x, gx, layout, eps) with grad and x in gx's layout, on non-empty tensors.
template <typename Run>
at::Tensor pixel_norm_backward_op(const at::Tensor& grad, const at::Tensor& x, int64_t dim, double eps, Run&& run) {
  const char* op = "medkern::pixel_norm_backward";
  const int64_t d = check_pixel_norm_args(op, x, dim, eps);
  check_same_device(op, "grad", grad, x);
  check_same_dtype(op, "grad", grad, x);
  check_same_shape(op, "grad", grad, x);
  at::Tensor gx = at::empty_like(x);
  if (x.numel() > 0) run(with_layout_of(grad, gx), with_layout_of(x, gx), gx, channel_layout(gx, d), eps);
  return gx;
}

}  // namespace medkern
