// medkern::modulate_weight and medkern::modulate_weight_backward on CPU: argument handling
// (csrc/common/modulate_weight_op.h), then the kernels of the best capability this CPU has.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/modulate_weight_op.h"
#include "capability.h"
#include "modulate_weight_kernel.h"

namespace medkern::cpu {
namespace {

const ModulateWeightKernels& kernels() {
  static const ModulateWeightKernels chosen = MEDKERN_CPU_KERNELS(modulate_weight_kernels);
  return chosen;
}

at::Tensor modulate_weight_cpu(const at::Tensor& weight, const at::Tensor& styles, bool demodulate, double eps) {
  return modulate_weight_op(weight, styles, demodulate, eps,
                            [&](const at::Tensor& w, const at::Tensor& s, at::Tensor& out,
                                const ModulateWeightShape& shape, bool demod, double e) {
                              kernels().forward(w.scalar_type(), w.const_data_ptr(), s.const_data_ptr(),
                                                out.mutable_data_ptr(), shape, demod, e);
                            });
}

std::tuple<at::Tensor, at::Tensor> modulate_weight_backward_cpu(const at::Tensor& grad, const at::Tensor& weight,
                                                                const at::Tensor& styles, bool demodulate,
                                                                double eps) {
  return modulate_weight_backward_op(
      grad, weight, styles, demodulate, eps,
      [&](const at::Tensor& g, const at::Tensor& w, const at::Tensor& s, at::Tensor& gw, at::Tensor& gs,
          const ModulateWeightShape& shape, bool demod, double e) {
        kernels().backward(w.scalar_type(), g.const_data_ptr(), w.const_data_ptr(), s.const_data_ptr(),
                           gw.mutable_data_ptr(), gs.mutable_data_ptr(), shape, demod, e);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CPU, m) {
  m.impl("modulate_weight", &modulate_weight_cpu);
  m.impl("modulate_weight_backward", &modulate_weight_backward_cpu);
}

}  // namespace medkern::cpu
