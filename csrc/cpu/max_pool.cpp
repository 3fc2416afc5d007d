// medkern::max_pool and medkern::max_pool_backward on CPU: argument handling
// (csrc/common/max_pool_op.h), then the kernels of the best capability this CPU has.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/max_pool_op.h"
#include "capability.h"
#include "max_pool_kernel.h"

namespace medkern::cpu {
namespace {

const MaxPoolKernels& kernels() {
  static const MaxPoolKernels chosen = MEDKERN_CPU_KERNELS(max_pool_kernels);
  return chosen;
}

std::tuple<at::Tensor, at::Tensor> max_pool_cpu(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                at::IntArrayRef stride, at::IntArrayRef padding,
                                                at::IntArrayRef dilation, bool ceil_mode) {
  return max_pool_op(x, kernel_size, stride, padding, dilation, ceil_mode,
                     [&](const at::Tensor& xd, at::Tensor& y, at::Tensor& argmax, const MaxPoolShape& s) {
                       kernels().forward(xd.scalar_type(), xd.const_data_ptr(), y.mutable_data_ptr(),
                                         argmax.mutable_data_ptr<uint8_t>(), s);
                     });
}

at::Tensor max_pool_backward_cpu(const at::Tensor& grad, const at::Tensor& argmax, at::IntArrayRef input_size,
                                 at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation) {
  return max_pool_backward_op(
      grad, argmax, input_size, kernel_size, stride, padding, dilation,
      [&](const at::Tensor& g, const at::Tensor& a, at::Tensor& dx, const MaxPoolShape& s) {
        kernels().backward(g.scalar_type(), g.const_data_ptr(), a.const_data_ptr<uint8_t>(), dx.mutable_data_ptr(), s);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CPU, m) {
  m.impl("max_pool", &max_pool_cpu);
  m.impl("max_pool_backward", &max_pool_backward_cpu);
}

}  // namespace medkern::cpu
