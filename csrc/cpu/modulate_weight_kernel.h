#pragma once
// The interface between medkern::modulate_weight's CPU op (modulate_weight.cpp) and its kernels
// (modulate_weight_kernel.cpp, compiled once per CPU capability). Plain pointers only.

#include <c10/core/ScalarType.h>

#include "../common/modulate_weight.h"

namespace medkern::cpu {

// All tensors contiguous: weight (O, I * K), styles (N, I), out and grad (N, O, I * K).
struct ModulateWeightKernels {
  void (*forward)(at::ScalarType dtype, const void* weight, const void* styles, void* out,
                  const ModulateWeightShape& s, bool demodulate, double eps);
  void (*backward)(at::ScalarType dtype, const void* grad, const void* weight, const void* styles, void* grad_weight,
                   void* grad_styles, const ModulateWeightShape& s, bool demodulate, double eps);
};

namespace DEFAULT { ModulateWeightKernels modulate_weight_kernels(); }
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 { ModulateWeightKernels modulate_weight_kernels(); }
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 { ModulateWeightKernels modulate_weight_kernels(); }
#endif

}  // namespace medkern::cpu
