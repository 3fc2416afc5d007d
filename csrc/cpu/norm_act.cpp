// medkern::norm_act and medkern::norm_act_backward on CPU: csrc/norm_act_op.cpp with the CPU
// kernels of the best capability this CPU has.

#include <torch/library.h>

#include "../norm_act_op.h"
#include "capability.h"
#include "norm_act_kernel.h"

namespace medkern::cpu {
namespace {

const NormActKernels& kernels() {
  static const NormActKernels chosen = MEDKERN_CPU_KERNELS(norm_act_kernels);
  return chosen;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_cpu(
    const at::Tensor& x, c10::string_view kind, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool batch_stats, double eps, c10::string_view act, double alpha,
    int64_t num_groups, bool keep_output) {
  return norm_act_forward(x, kind, weight, bias, running_mean, running_var, batch_stats, eps, act, alpha, num_groups,
                          keep_output, kernels());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_backward_cpu(
    const at::Tensor& grad, const at::Tensor& saved, bool saved_is_output, const at::Tensor& mean,
    const at::Tensor& var, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view kind, bool batch_stats, double eps, c10::string_view act, double alpha, int64_t num_groups,
    std::array<bool, 3> output_mask) {
  return norm_act_backward(grad, saved, saved_is_output, mean, var, weight, bias, kind, batch_stats, eps, act, alpha,
                           num_groups, output_mask, kernels());
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CPU, m) {
  m.impl("norm_act", &norm_act_cpu);
  m.impl("norm_act_backward", &norm_act_backward_cpu);
}

}  // namespace medkern::cpu
