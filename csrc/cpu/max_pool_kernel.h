#pragma once
// The interface between medkern::max_pool's CPU op (max_pool.cpp) and its kernels
// (max_pool_kernel.cpp, compiled once per CPU capability). Plain pointers only.

#include <c10/core/ScalarType.h>

#include <cstdint>

#include "../common/max_pool.h"

namespace medkern::cpu {

// Tensors dense in the shape's layout (csrc/common/max_pool.h).
struct MaxPoolKernels {
  void (*forward)(at::ScalarType dtype, const void* x, void* y, uint8_t* argmax, const MaxPoolShape& s);
  void (*backward)(at::ScalarType dtype, const void* grad, const uint8_t* argmax, void* dx, const MaxPoolShape& s);
};

namespace DEFAULT { MaxPoolKernels max_pool_kernels(); }
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 { MaxPoolKernels max_pool_kernels(); }
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 { MaxPoolKernels max_pool_kernels(); }
#endif

}  // namespace medkern::cpu
