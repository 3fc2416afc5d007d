// medkern::rnn_sequence and medkern::rnn_sequence_backward on CPU: csrc/rnn_op.cpp with the
// CPU kernels of the best capability this CPU has.

#include <torch/library.h>

#include <atomic>

#include "../rnn_op.h"
#include "capability.h"
#include "gemm_kernel.h"
#include "packed_gemm.h"
#include "rnn_gemm.h"
#include "rnn_kernel.h"

namespace medkern::cpu {
namespace {

std::atomic<RnnGemm> g_rnn_gemm{RnnGemm::kAuto};

// MKL picks its code path by CPU vendor: on others than Intel's it runs a generic one at about
// half the speed of the vector units (csrc/cpu/gemm_kernel.cpp).
bool mkl_generic_path() {
#if defined(__x86_64__) || defined(_M_X64)
  return !__builtin_cpu_is("intel");
#else
  return false;
#endif
}

FixedRightGemmPlanner vector_planner() {
  static const FixedRightGemmPlanner planner = MEDKERN_CPU_KERNELS(vector_gemm_planner);
  return planner;
}

bool uses_vector_gemm() {
  const RnnGemm choice = g_rnn_gemm.load();
  return vector_planner() != nullptr && (choice == RnnGemm::kMedkern || (choice == RnnGemm::kAuto && mkl_generic_path()));
}

std::unique_ptr<FixedRightGemm> plan_gemm(const at::Tensor& b, int64_t rows, int64_t calls) {
  if (uses_vector_gemm()) {
    if (auto planned = vector_planner()(b, rows, calls)) return planned;
  }
  return plan_packed_gemm(b, rows, calls);
}

// A matrix the vector GEMMs read in place: float32 rows with unit column stride.
bool float_rows(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat && t.dim() == 2 && (t.size(1) <= 1 || t.stride(1) == 1) &&
         t.stride(0) >= t.size(1);
}

at::Tensor vector_transposed_product(const at::Tensor& a, const at::Tensor& b) {
  static const TransposedGemm gemm = MEDKERN_CPU_KERNELS(vector_transposed_gemm);
  if (gemm == nullptr || !uses_vector_gemm() || !float_rows(a) || !float_rows(b) || a.size(0) != b.size(0)) {
    return at::mm(a.t(), b);
  }
  at::Tensor out = at::empty({a.size(1), b.size(1)}, a.options());
  gemm(a.const_data_ptr<float>(), a.stride(0), b.const_data_ptr<float>(), b.stride(0), a.size(0), a.size(1), b.size(1),
       out.mutable_data_ptr<float>(), out.stride(0));
  return out;
}

const RnnKernels& kernels() {
  static const RnnKernels chosen = [] {
    RnnKernels k = MEDKERN_CPU_KERNELS(rnn_kernels);
    k.plan_gemm = &plan_gemm;
    k.transposed_product = &vector_transposed_product;
    return k;
  }();
  return chosen;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_sequence_cpu(
    const at::Tensor& xproj, const at::Tensor& weight_hh, const OptTensor& bias_hh, const at::Tensor& h0,
    const OptTensor& c0, const OptTensor& lengths, c10::string_view cell, bool reverse, const OptTensor& weight_hr,
    const OptTensor& norm_h_weight, const OptTensor& norm_h_bias, const OptTensor& norm_c_weight,
    const OptTensor& norm_c_bias, double eps, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
    const OptTensor& candidate_mask) {
  return rnn_sequence_forward(xproj, weight_hh, bias_hh, h0, c0, lengths, cell, reverse, weight_hr, norm_h_weight,
                              norm_h_bias, norm_c_weight, norm_c_bias, eps, zoneout_h, zoneout_c, candidate_mask,
                              kernels());
}

auto rnn_sequence_backward_cpu(const at::Tensor& grad_states, const OptTensor& grad_cells, const at::Tensor& states,
                               const at::Tensor& cells, const at::Tensor& work, const at::Tensor& weight_hh,
                               bool has_bias_hh, const OptTensor& lengths, c10::string_view cell, bool reverse,
                               const OptTensor& weight_hr, const OptTensor& norm_h_weight,
                               const OptTensor& norm_c_weight, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
                               const OptTensor& candidate_mask) {
  return rnn_sequence_backward(grad_states, grad_cells, states, cells, work, weight_hh, has_bias_hh, lengths, cell,
                               reverse, weight_hr, norm_h_weight, norm_c_weight, zoneout_h, zoneout_c, candidate_mask,
                               kernels());
}

}  // namespace

void set_rnn_gemm(RnnGemm choice) { g_rnn_gemm.store(choice); }

const char* rnn_gemm_in_use() { return uses_vector_gemm() ? "medkern" : "library"; }

namespace {

at::Tensor transposed_product_cpu(const at::Tensor& a, const at::Tensor& b) {
  return transposed_product(a, b, kernels());
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CPU, m) {
  m.impl("rnn_sequence", &rnn_sequence_cpu);
  m.impl("rnn_sequence_backward", &rnn_sequence_backward_cpu);
  m.impl("transposed_product", &transposed_product_cpu);
}

}  // namespace medkern::cpu
