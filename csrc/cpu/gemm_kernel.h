#pragma once
// medkern's own packed float32 GEMM for a fixed right-hand matrix, one per compiled capability
// (csrc/cpu/gemm_kernel.cpp); nullptr where the capability has no vector registers to use.

#include "../common/fixed_gemm.h"

namespace medkern::cpu {

namespace DEFAULT { FixedRightGemmPlanner vector_gemm_planner(); }
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 { FixedRightGemmPlanner vector_gemm_planner(); }
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 { FixedRightGemmPlanner vector_gemm_planner(); }
#endif

}  // namespace medkern::cpu
