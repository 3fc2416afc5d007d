#pragma once
// Host-side argument handling of medkern::modulate_weight and medkern::modulate_weight_backward,
// shared by the CPU and CUDA registrations: checks, contiguous inputs, and the outputs (all
// contiguous; the fake kernels in medkern/ops/modulate_weight.py allocate the same).

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "modulate_weight.h"

namespace medkern {

inline ModulateWeightShape check_modulate_weight_args(const char* op, const at::Tensor& weight,
                                                      const at::Tensor& styles, double eps) {
  check_floating(op, "weight", weight);
  check_floating(op, "styles", styles);
  TORCH_CHECK_VALUE(weight.dim() >= 2, op, ": weight must be (out_channels, in_channels, *kernel), got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(styles.dim() == 2 && styles.size(1) == weight.size(1), op,
                    ": styles must be (N, in_channels) with in_channels = weight.shape[1] = ", weight.size(1),
                    ", got shape ", styles.sizes());
  TORCH_CHECK_TYPE(styles.scalar_type() == weight.scalar_type(), op, ": styles must have dtype ",
                   weight.scalar_type(), " (that of weight), got ", styles.scalar_type());
  TORCH_CHECK_VALUE(styles.device() == weight.device(), op, ": styles must be on ", weight.device(),
                    " (the device of weight), got ", styles.device());
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  int64_t k = 1;
  for (int64_t d = 2; d < weight.dim(); ++d) k *= weight.size(d);
  return {styles.size(0), weight.size(0), weight.size(1), k};
}

// The output shape (N, O, I, *k).
inline std::vector<int64_t> modulate_weight_out_shape(const at::Tensor& weight, int64_t n) {
  std::vector<int64_t> shape{n};
  for (int64_t size : weight.sizes()) shape.push_back(size);
  return shape;
}

// run(weight, styles, out, shape, demodulate, eps) on contiguous, non-empty tensors.
template <typename Run>
at::Tensor modulate_weight_op(const at::Tensor& weight, const at::Tensor& styles, bool demodulate, double eps,
                              Run&& run) {
  const ModulateWeightShape s = check_modulate_weight_args("medkern::modulate_weight", weight, styles, eps);
  at::Tensor out = at::empty(modulate_weight_out_shape(weight, s.n), weight.options());
  if (out.numel() > 0) run(weight.contiguous(), styles.contiguous(), out, s, demodulate, eps);
  return out;
}

// run(grad, weight, styles, grad_weight, grad_styles, shape, demodulate, eps) on contiguous,
// non-empty tensors; with an empty grad the gradients are zeros.
template <typename Run>
std::tuple<at::Tensor, at::Tensor> modulate_weight_backward_op(const at::Tensor& grad, const at::Tensor& weight,
                                                               const at::Tensor& styles, bool demodulate,
                                                               double eps, Run&& run) {
  const char* op = "medkern::modulate_weight_backward";
  const ModulateWeightShape s = check_modulate_weight_args(op, weight, styles, eps);
  check_floating(op, "grad", grad);
  TORCH_CHECK_TYPE(grad.scalar_type() == weight.scalar_type(), op, ": grad must have dtype ", weight.scalar_type(),
                   " (that of weight), got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == weight.device(), op, ": grad must be on ", weight.device(),
                    " (the device of weight), got ", grad.device());
  const std::vector<int64_t> shape = modulate_weight_out_shape(weight, s.n);
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef(shape), op, ": grad must have shape (N, *weight.shape) = ",
                    at::IntArrayRef(shape), ", got ", grad.sizes());
  at::Tensor grad_weight = at::empty(weight.sizes(), weight.options());
  at::Tensor grad_styles = at::empty(styles.sizes(), styles.options());
  if (grad.numel() == 0) {
    grad_weight.zero_();
    grad_styles.zero_();
  } else {
    run(grad.contiguous(), weight.contiguous(), styles.contiguous(), grad_weight, grad_styles, s, demodulate, eps);
  }
  return {grad_weight, grad_styles};
}

}  // namespace medkern
