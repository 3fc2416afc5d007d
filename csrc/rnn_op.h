#pragma once
// medkern::rnn_sequence, medkern::rnn_sequence_backward and medkern::transposed_product for any
// device, given that device's step kernels (csrc/common/rnn.h): the CPU and CUDA registrations
// call these.

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "common/rnn.h"

namespace medkern {

using OptTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_sequence_forward(
    const at::Tensor& xproj, const at::Tensor& weight_hh, const OptTensor& bias_hh, const at::Tensor& h0,
    const OptTensor& c0, const OptTensor& lengths, c10::string_view cell, bool reverse, const OptTensor& weight_hr,
    const OptTensor& norm_h_weight, const OptTensor& norm_h_bias, const OptTensor& norm_c_weight,
    const OptTensor& norm_c_bias, double eps, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
    const OptTensor& candidate_mask, const RnnKernels& kernels);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
rnn_sequence_backward(const at::Tensor& grad_states, const OptTensor& grad_cells, const at::Tensor& states,
                      const at::Tensor& cells, const at::Tensor& work, const at::Tensor& weight_hh, bool has_bias_hh,
                      const OptTensor& lengths, c10::string_view cell, bool reverse, const OptTensor& weight_hr,
                      const OptTensor& norm_h_weight, const OptTensor& norm_c_weight, const OptTensor& zoneout_h,
                      const OptTensor& zoneout_c, const OptTensor& candidate_mask, const RnnKernels& kernels);

// a.T @ b for a (K, M) and b (K, N), checked: kernels.transposed_product, else at::mm.
at::Tensor transposed_product(const at::Tensor& a, const at::Tensor& b, const RnnKernels& kernels);

}  // namespace medkern
