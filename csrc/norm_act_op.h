#pragma once
// medkern::norm_act and medkern::norm_act_backward for any device, given that device's
// kernels (csrc/common/norm_act_kernels.h): the CPU and CUDA registrations call these.

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/norm_act_kernels.h"

namespace medkern {

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_forward(
    const at::Tensor& x, c10::string_view kind, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool batch_stats, double eps, c10::string_view act, double alpha,
    int64_t num_groups, bool keep_output, const NormActKernels& kernels);

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_backward(
    const at::Tensor& grad, const at::Tensor& saved, bool saved_is_output, const at::Tensor& mean,
    const at::Tensor& var, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view kind, bool batch_stats, double eps, c10::string_view act, double alpha, int64_t num_groups,
    std::array<bool, 3> output_mask, const NormActKernels& kernels);

}  // namespace medkern
