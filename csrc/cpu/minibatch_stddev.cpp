// medkern::minibatch_stddev and medkern::minibatch_stddev_backward on CPU: argument handling
// (csrc/common/minibatch_stddev_op.h), then the kernels of the best capability this CPU has.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/minibatch_stddev_op.h"
#include "capability.h"
#include "minibatch_stddev_kernel.h"

namespace medkern::cpu {
namespace {

const MinibatchStddevKernels& kernels() {
  static const MinibatchStddevKernels chosen = MEDKERN_CPU_KERNELS(minibatch_stddev_kernels);
  return chosen;
}

at::Tensor minibatch_stddev_cpu(const at::Tensor& x, int64_t group_size, int64_t num_channels) {
  return minibatch_stddev_op(x, group_size, num_channels,
                             [&](const at::Tensor& xd, at::Tensor& out, const MinibatchStddevShape& s) {
                               kernels().forward(x.scalar_type(), xd.const_data_ptr(), out.mutable_data_ptr(), s);
                             });
}

at::Tensor minibatch_stddev_backward_cpu(const at::Tensor& grad, const at::Tensor& x, int64_t group_size,
                                         int64_t num_channels) {
  return minibatch_stddev_backward_op(
      grad, x, group_size, num_channels,
      [&](const at::Tensor& gd, const at::Tensor& xd, at::Tensor& gx, const MinibatchStddevShape& s) {
        kernels().backward(x.scalar_type(), gd.const_data_ptr(), xd.const_data_ptr(), gx.mutable_data_ptr(), s);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CPU, m) {
  m.impl("minibatch_stddev", &minibatch_stddev_cpu);
  m.impl("minibatch_stddev_backward", &minibatch_stddev_backward_cpu);
}

}  // namespace medkern::cpu
