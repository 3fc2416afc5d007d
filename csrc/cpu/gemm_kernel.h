#pragma once
// medkern's own packed float32 GEMMs, one set per compiled capability (csrc/cpu/gemm_kernel.cpp);
// nullptr where the capability has no vector registers to use.

#include "../common/fixed_gemm.h"

namespace medkern::cpu {

// out (m x n) = a.T @ b for a (k x m) and b (k x n), row-major with unit column stride.
using TransposedGemm = void (*)(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, int64_t m,
                                int64_t n, float* out, int64_t ldo);

namespace DEFAULT {
FixedRightGemmPlanner vector_gemm_planner();
TransposedGemm vector_transposed_gemm();
}  // namespace DEFAULT
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 {
FixedRightGemmPlanner vector_gemm_planner();
TransposedGemm vector_transposed_gemm();
}  // namespace AVX2
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 {
FixedRightGemmPlanner vector_gemm_planner();
TransposedGemm vector_transposed_gemm();
}  // namespace AVX512
#endif

}  // namespace medkern::cpu
