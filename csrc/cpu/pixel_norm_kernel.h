#pragma once
// The interface between medkern::pixel_norm's CPU op (pixel_norm.cpp) and its kernels
// (pixel_norm_kernel.cpp, compiled once per CPU capability). Plain pointers only.

#include <c10/core/ScalarType.h>

#include "../common/channel_layout.h"

namespace medkern::cpu {

// All tensors dense in the same memory order, seen as [outer, channels, inner].
struct PixelNormKernels {
  void (*forward)(at::ScalarType dtype, const void* x, void* y, const ChannelLayout& l, double eps);
  void (*backward)(at::ScalarType dtype, const void* g, const void* x, void* gx, const ChannelLayout& l, double eps);
};

namespace DEFAULT { PixelNormKernels pixel_norm_kernels(); }
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 { PixelNormKernels pixel_norm_kernels(); }
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 { PixelNormKernels pixel_norm_kernels(); }
#endif

}  // namespace medkern::cpu
