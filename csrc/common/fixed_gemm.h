#pragma once
// out = a @ b for many a and one b: an RNN's recurrent weights over a whole sequence. A device
// may prepare b once (the CPU packs it for MKL, csrc/cpu/packed_gemm.cpp, or for medkern's own
// GEMM, csrc/cpu/gemm_kernel.cpp); otherwise each call is at::mm_out.

#include <ATen/ATen.h>

#include <memory>

namespace medkern {

class FixedRightGemm {
 public:
  virtual ~FixedRightGemm() = default;
  virtual void run(const at::Tensor& a, const at::Tensor& out) const = 0;
};

// A device's planner for b, `rows` rows of a per call and `calls` calls: nullptr when it has
// nothing better than at::mm_out.
using FixedRightGemmPlanner = std::unique_ptr<FixedRightGemm> (*)(const at::Tensor& b, int64_t rows, int64_t calls);

class LibraryGemm final : public FixedRightGemm {
 public:
  // b laid out contiguous: the library's GEMM is faster that way for an RNN's shapes
  explicit LibraryGemm(const at::Tensor& b) : b_(b.contiguous()) {}
  void run(const at::Tensor& a, const at::Tensor& out) const override {
    at::Tensor o = out;
    at::mm_out(o, a, b_);
  }

 private:
  at::Tensor b_;
};

inline std::unique_ptr<FixedRightGemm> plan_fixed_right_gemm(FixedRightGemmPlanner planner, const at::Tensor& b,
                                                             int64_t rows, int64_t calls) {
  if (planner) {
    if (auto planned = planner(b, rows, calls)) return planned;
  }
  return std::make_unique<LibraryGemm>(b);
}

}  // namespace medkern
