#pragma once
// The CPU's FixedRightGemmPlanner: MKL's packed GEMM when the MKL inside torch offers it.

#include "../common/fixed_gemm.h"

namespace medkern::cpu {

// b packed once into MKL's internal layout, so each call skips the packing an ordinary GEMM
// repeats (a quarter of the time of a 32x256x1024 product here). float32 only; nullptr when
// torch's MKL does not export the packed API (other BLAS, other platforms) or it would not pay.
std::unique_ptr<FixedRightGemm> plan_packed_gemm(const at::Tensor& b, int64_t rows, int64_t calls);

}  // namespace medkern::cpu
