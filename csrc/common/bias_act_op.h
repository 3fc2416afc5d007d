#pragma once
// Host-side argument handling of medkern::bias_act and medkern::bias_act_backward, shared by the
// CPU and CUDA registrations: checks, defaults, the output allocation (whose layout the fake
// kernel in medkern/ops/bias_act.py mirrors: torch.empty_like(x)).

#include <ATen/ATen.h>

#include <optional>

#include "activations.h"
#include "bias_act.h"
#include "checks.h"
#include "layout.h"

namespace medkern {

inline BiasActArgs check_bias_act_args(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& b,
                                       int64_t dim, c10::string_view act, double alpha, double gain,
                                       std::optional<double> clamp) {
  check_floating(op, "x", x);
  const int64_t d = check_dim(op, dim, x.dim());
  if (b.has_value()) {
    check_same_device(op, "b", *b, x);
    check_same_dtype(op, "b", *b, x);
    TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == x.size(d), op, ": b must be 1-d with x.shape[", d,
                      "] = ", x.size(d), " elements, got shape ", b->sizes());
  }
  TORCH_CHECK_VALUE(std::isfinite(gain), op, ": gain must be finite, got ", gain);
  TORCH_CHECK_VALUE(std::isfinite(alpha), op, ": alpha must be finite, got ", alpha);
  if (clamp.has_value()) {
    TORCH_CHECK_VALUE(*clamp >= 0, op, ": clamp must be >= 0 (or None for no clamp), got ", *clamp);
  }
  return {parse_act(op, act), d, alpha, gain, clamp};
}

// medkern::bias_act for one device: checks, allocates y with x's layout (dense), brings x to
// that layout, and calls run(x, y, layout, args) on non-empty tensors.
template <typename Run>
at::Tensor bias_act_op(const at::Tensor& x, const std::optional<at::Tensor>& b, int64_t dim, c10::string_view act,
                       double alpha, double gain, std::optional<double> clamp, Run&& run) {
  const BiasActArgs args = check_bias_act_args("medkern::bias_act", x, b, dim, act, alpha, gain, clamp);
  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) run(with_layout_of(x, y), y, channel_layout(y, args.dim), args);
  return y;
}

// medkern::bias_act_backward for one device, likewise: run(grad, x, gx, gb, layout, args) with
// grad and x in gx's layout; gb is x.shape[dim] long if bias_grad, else empty.
template <typename Run>
std::tuple<at::Tensor, at::Tensor> bias_act_backward_op(const at::Tensor& grad, const at::Tensor& x,
                                                        const std::optional<at::Tensor>& b, int64_t dim,
                                                        c10::string_view act, double alpha, double gain,
                                                        std::optional<double> clamp, int64_t order, bool bias_grad,
                                                        Run&& run) {
  const char* op = "medkern::bias_act_backward";
  const BiasActArgs args = check_bias_act_args(op, x, b, dim, act, alpha, gain, clamp);
  TORCH_CHECK_VALUE(order == 1 || order == 2, op,
                    ": order must be 1 or 2 (higher orders run in PyTorch ops), got ", order);
  check_same_device(op, "grad", grad, x);
  check_same_dtype(op, "grad", grad, x);
  check_same_shape(op, "grad", grad, x);
  at::Tensor gx = at::empty_like(x);
  at::Tensor gb = at::zeros({bias_grad ? x.size(args.dim) : 0}, x.options());
  if (x.numel() > 0) {
    run(with_layout_of(grad, gx), with_layout_of(x, gx), gx, gb, channel_layout(gx, args.dim), args, order);
  }
  return {gx, gb};
}

}  // namespace medkern
