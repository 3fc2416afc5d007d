// medkern::pixel_norm and medkern::pixel_norm_backward on CPU: argument handling
// (csrc/common/pixel_norm_op.h), then the kernels of the best capability this CPU has.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/pixel_norm_op.h"
#include "capability.h"
#include "pixel_norm_kernel.h"

namespace medkern::cpu {
namespace {

const PixelNormKernels& kernels() {
  static const PixelNormKernels chosen = MEDKERN_CPU_KERNELS(pixel_norm_kernels);
  return chosen;
}

at::Tensor pixel_norm_cpu(const at::Tensor& x, int64_t dim, double eps) {
  return pixel_norm_op(x, dim, eps, [&](const at::Tensor& xd, at::Tensor& y, const ChannelLayout& l, double e) {
    kernels().forward(x.scalar_type(), xd.const_data_ptr(), y.mutable_data_ptr(), l, e);
  });
}

at::Tensor pixel_norm_backward_cpu(const at::Tensor& grad, const at::Tensor& x, int64_t dim, double eps) {
  return pixel_norm_backward_op(
      grad, x, dim, eps,
      [&](const at::Tensor& gd, const at::Tensor& xd, at::Tensor& gx, const ChannelLayout& l, double e) {
        kernels().backward(x.scalar_type(), gd.const_data_ptr(), xd.const_data_ptr(), gx.mutable_data_ptr(), l, e);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CPU, m) {
  m.impl("pixel_norm", &pixel_norm_cpu);
  m.impl("pixel_norm_backward", &pixel_norm_backward_cpu);
}

}  // namespace medkern::cpu
