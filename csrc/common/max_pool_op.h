#pragma once
// Host-side argument handling of medkern::max_pool and medkern::max_pool_backward, shared by the
// CPU and CUDA registrations: the checks torch's max_pool makes, the output size, the layout the
// kernels walk (csrc/common/max_pool.h) and the outputs in that layout, which the fake kernels in
// medkern/ops/max_pool.py mirror.

#include <ATen/ATen.h>

#include <vector>

#include "checks.h"
#include "max_pool.h"

namespace medkern {

// Entry `axis` (of D, H, W) of a per-spatial-dim list of 1 to 3 entries (a 1-d or 2-d pool's
// lists lack the leading axes): `fill` for an axis the list lacks.
inline int64_t max_pool_axis_entry(at::IntArrayRef per_dim, int axis, int64_t fill) {
  const int64_t j = axis - (3 - static_cast<int64_t>(per_dim.size()));
  return j < 0 ? fill : per_dim[j];
}

// The pool's (D, H, W) parameters from lists of spatial_dims entries (those of `arg`, x or argmax),
// checked as torch checks them;
// the input and output sizes are left to the caller.
inline MaxPoolShape max_pool_parameters(const char* op, const char* arg, int64_t spatial_dims,
                                        at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation) {
  TORCH_CHECK_VALUE(spatial_dims >= 1 && spatial_dims <= 3, op, ": ", arg, " must be (N, C, *spatial) with 1 to 3 ",
                    "spatial dims, got ", spatial_dims + 2, " dims");
  const std::pair<const char*, at::IntArrayRef> lists[] = {
      {"kernel_size", kernel_size}, {"stride", stride}, {"padding", padding}, {"dilation", dilation}};
  for (const auto& [name, list] : lists) {
    TORCH_CHECK_VALUE(static_cast<int64_t>(list.size()) == spatial_dims, op, ": ", name, " must have ", spatial_dims,
                      " entries (one per spatial dim of x), got ", list.size());
  }
  MaxPoolShape s{};
  int64_t window = 1;
  for (int axis = 0; axis < 3; ++axis) {
    s.kernel[axis] = max_pool_axis_entry(kernel_size, axis, 1);
    s.stride[axis] = max_pool_axis_entry(stride, axis, 1);
    s.padding[axis] = max_pool_axis_entry(padding, axis, 0);
    s.dilation[axis] = max_pool_axis_entry(dilation, axis, 1);
    constexpr int64_t kLargest = int64_t{1} << 40;  // keeps every index computation far from overflow
    TORCH_CHECK_VALUE(s.kernel[axis] >= 1 && s.stride[axis] >= 1 && s.dilation[axis] >= 1 &&
                          s.stride[axis] <= kLargest && s.dilation[axis] <= kLargest,
                      op, ": kernel_size, stride and dilation must be >= 1 (stride and dilation at most 2^40), got ",
                      kernel_size, ", ", stride, ", ", dilation);
    TORCH_CHECK_VALUE(s.padding[axis] >= 0 && s.padding[axis] <= s.kernel[axis] / 2, op,
                      ": padding must be >= 0 and at most half the kernel size, got padding ", padding,
                      " for kernel_size ", kernel_size);
    TORCH_CHECK_VALUE(s.kernel[axis] <= kMaxPoolWindowLimit && window * s.kernel[axis] <= kMaxPoolWindowLimit, op,
                      ": the window must have at most ", kMaxPoolWindowLimit,
                      " positions (its argmax is kept in a byte), got kernel_size ", kernel_size,
                      "; use torch's max_pool");
    window *= s.kernel[axis];
  }
  return s;
}

// torch's pooling output size along one axis.
inline int64_t max_pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation,
                                    bool ceil_mode) {
  const int64_t span = in + 2 * padding - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = max_pool_floor_div(span, stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + padding) --out;  // the last window must start inside
  return out;
}

// Whether t (N, C, *spatial) is stored with C innermost (and is not plainly contiguous).
inline bool max_pool_channels_last(const at::Tensor& t) {
  return !t.is_contiguous() && t.movedim(1, -1).is_contiguous();
}

// An empty tensor of logical shape (n, c, *spatial) in the shape's layout.
inline at::Tensor max_pool_empty(const MaxPoolShape& s, at::IntArrayRef spatial, const at::TensorOptions& options) {
  std::vector<int64_t> sizes{s.n};
  if (!s.channels_last) sizes.push_back(s.c);
  sizes.insert(sizes.end(), spatial.begin(), spatial.end());
  if (s.channels_last) sizes.push_back(s.c);
  const at::Tensor t = at::empty(sizes, options);
  return s.channels_last ? t.movedim(-1, 1) : t;
}

// run(x, y, argmax, shape) with x in the layout of y and argmax, on non-empty outputs.
template <typename Run>
std::tuple<at::Tensor, at::Tensor> max_pool_op(const at::Tensor& x_in, at::IntArrayRef kernel_size,
                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                               at::IntArrayRef dilation, bool ceil_mode, Run&& run) {
  const char* op = "medkern::max_pool";
  check_floating(op, "x", x_in);
  MaxPoolShape s = max_pool_parameters(op, "x", x_in.dim() - 2, kernel_size, stride, padding, dilation);
  for (int64_t d = 1; d < x_in.dim(); ++d) {
    TORCH_CHECK_VALUE(x_in.size(d) > 0, op, ": x may be empty only along dim 0 (the batch), got shape ",
                      x_in.sizes());
  }
  const at::Tensor x = x_in.is_contiguous() || max_pool_channels_last(x_in) ? x_in : x_in.contiguous();
  s.channels_last = max_pool_channels_last(x);
  s.n = x.size(0);
  s.c = x.size(1);
  const at::IntArrayRef in_spatial = x.sizes().slice(2);
  std::vector<int64_t> out_spatial;
  for (int axis = 0; axis < 3; ++axis) {
    s.in[axis] = max_pool_axis_entry(in_spatial, axis, 1);
    s.out[axis] = max_pool_output_size(s.in[axis], s.kernel[axis], s.stride[axis], s.padding[axis],
                                       s.dilation[axis], ceil_mode);
    TORCH_CHECK_VALUE(s.out[axis] >= 1, op, ": the output would be empty: input spatial size ", in_spatial,
                      " is too small for kernel_size ", kernel_size, ", padding ", padding, " and dilation ",
                      dilation);
  }
  for (int axis = 3 - static_cast<int>(in_spatial.size()); axis < 3; ++axis) out_spatial.push_back(s.out[axis]);
  at::Tensor y = max_pool_empty(s, out_spatial, x.options());
  at::Tensor argmax = max_pool_empty(s, out_spatial, x.options().dtype(at::kByte));
  if (y.numel() > 0) run(x, y, argmax, s);
  return {y, argmax};
}

// run(grad, argmax, dx, shape) with grad in argmax's layout and dx in both's, on non-empty dx.
template <typename Run>
at::Tensor max_pool_backward_op(const at::Tensor& grad_in, const at::Tensor& argmax, at::IntArrayRef input_size,
                                at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, Run&& run) {
  const char* op = "medkern::max_pool_backward";
  check_floating(op, "grad", grad_in);
  TORCH_CHECK_TYPE(argmax.scalar_type() == at::kByte, op, ": argmax must be uint8 (max_pool's second output), got ",
                   argmax.scalar_type());
  TORCH_CHECK_VALUE(argmax.device() == grad_in.device(), op, ": argmax must be on ", grad_in.device(),
                    " (the device of grad), got ", argmax.device());
  TORCH_CHECK_VALUE(grad_in.sizes() == argmax.sizes(), op, ": grad must have the shape of argmax ", argmax.sizes(),
                    ", got ", grad_in.sizes());
  MaxPoolShape s = max_pool_parameters(op, "argmax", argmax.dim() - 2, kernel_size, stride, padding, dilation);
  TORCH_CHECK_VALUE(static_cast<int64_t>(input_size.size()) == argmax.dim() &&
                        input_size[0] == argmax.size(0) && input_size[1] == argmax.size(1),
                    op, ": input_size must be x's shape (N, C, *spatial) for argmax of shape ", argmax.sizes(),
                    ", got ", input_size);
  TORCH_CHECK_VALUE(argmax.is_contiguous() || max_pool_channels_last(argmax), op,
                    ": argmax must be laid out as max_pool wrote it (contiguous or channels-last)");
  s.channels_last = max_pool_channels_last(argmax);
  s.n = argmax.size(0);
  s.c = argmax.size(1);
  for (int axis = 0; axis < 3; ++axis) {
    s.in[axis] = max_pool_axis_entry(input_size.slice(2), axis, 1);
    s.out[axis] = max_pool_axis_entry(argmax.sizes().slice(2), axis, 1);
    const auto size_of = [&](bool ceil_mode) {
      return max_pool_output_size(s.in[axis], s.kernel[axis], s.stride[axis], s.padding[axis], s.dilation[axis],
                                  ceil_mode);
    };
    TORCH_CHECK_VALUE(s.in[axis] >= 1 && (s.out[axis] == size_of(false) || s.out[axis] == size_of(true)), op,
                      ": argmax of shape ", argmax.sizes(), " is not max_pool's output for input_size ", input_size,
                      " and these kernel_size, stride, padding and dilation");
  }
  const at::Tensor grad =
      grad_in.strides() == argmax.strides() ? grad_in : at::empty_like(argmax, grad_in.options()).copy_(grad_in);
  at::Tensor dx = max_pool_empty(s, input_size.slice(2), grad.options());
  if (dx.numel() > 0) run(grad, argmax, dx, s);
  return dx;
}

}  // namespace medkern
