#pragma once
// The interface between medkern::upfirdn2d's CPU op (upfirdn2d.cpp) and its kernel
// (upfirdn2d_kernel.cpp, compiled once per CPU capability): plain pointers and structs only.

#include <c10/core/ScalarType.h>

#include "../common/upfirdn2d.h"

namespace medkern::cpu {

// x and out of the problem's dtype; taps in its op-math type (float for float16/bfloat16).
struct UpFirDn2dPointers {
  const void* x;
  const void* taps;
  void* out;
};

struct UpFirDn2dKernels {
  void (*forward)(at::ScalarType dtype, const UpFirDn2dPointers& ptr, const UpFirDn2dProblem& problem);
};

namespace DEFAULT { UpFirDn2dKernels upfirdn2d_kernels(); }
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 { UpFirDn2dKernels upfirdn2d_kernels(); }
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 { UpFirDn2dKernels upfirdn2d_kernels(); }
#endif

}  // namespace medkern::cpu
