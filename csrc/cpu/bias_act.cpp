// medkern::bias_act and medkern::bias_act_backward on CPU: argument handling, then the kernels
// of the best capability this CPU has (capability.h).

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/bias_act_op.h"
#include "bias_act_kernel.h"
#include "capability.h"

namespace medkern::cpu {

namespace {

const BiasActKernels& kernels() {
  static const BiasActKernels chosen = MEDKERN_CPU_KERNELS(bias_act_kernels);
  return chosen;
}

template <typename T>
const void* data_or_null(const std::optional<T>& t) {
  return t.has_value() ? t->const_data_ptr() : nullptr;
}

at::Tensor bias_act_cpu(const at::Tensor& x, const std::optional<at::Tensor>& b, int64_t dim, c10::string_view act,
                        double alpha, double gain, std::optional<double> clamp) {
  return bias_act_op(x, b, dim, act, alpha, gain, clamp,
                     [&](const at::Tensor& xd, at::Tensor& y, const ChannelLayout& l, const BiasActArgs& args) {
                       const std::optional<at::Tensor> bc = b.has_value() ? std::optional(b->contiguous()) : b;
                       const BiasActPointers ptr{nullptr, xd.const_data_ptr(), data_or_null(bc), y.mutable_data_ptr(),
                                                 nullptr};
                       kernels().forward(x.scalar_type(), ptr, l, args);
                     });
}

std::tuple<at::Tensor, at::Tensor> bias_act_backward_cpu(const at::Tensor& grad, const at::Tensor& x,
                                                         const std::optional<at::Tensor>& b, int64_t dim,
                                                         c10::string_view act, double alpha, double gain,
                                                         std::optional<double> clamp, int64_t order, bool bias_grad) {
  return bias_act_backward_op(
      grad, x, b, dim, act, alpha, gain, clamp, order, bias_grad,
      [&](const at::Tensor& gd, const at::Tensor& xd, at::Tensor& gx, at::Tensor& gb, const ChannelLayout& l,
          const BiasActArgs& args, int64_t ord) {
        const std::optional<at::Tensor> bc = b.has_value() ? std::optional(b->contiguous()) : b;
        const BiasActPointers ptr{gd.const_data_ptr(), xd.const_data_ptr(), data_or_null(bc), gx.mutable_data_ptr(),
                                  gb.numel() > 0 ? gb.mutable_data_ptr() : nullptr};
        kernels().grad(x.scalar_type(), ord, ptr, l, args);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_backward", &bias_act_backward_cpu);
}

}  // namespace medkern::cpu

