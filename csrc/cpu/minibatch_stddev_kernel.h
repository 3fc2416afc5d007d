#pragma once
// The interface between medkern::minibatch_stddev's CPU op (minibatch_stddev.cpp) and its
// kernels (minibatch_stddev_kernel.cpp, compiled once per CPU capability). Plain pointers only.

#include <c10/core/ScalarType.h>

#include "../common/minibatch_stddev.h"

namespace medkern::cpu {

struct MinibatchStddevKernels {
  // Writes out[:, C:] (the statistics channels) from x.
  void (*forward)(at::ScalarType dtype, const void* x, void* out, const MinibatchStddevShape& s);
  // gx from grad (out's shape and strides) and x.
  void (*backward)(at::ScalarType dtype, const void* grad, const void* x, void* gx, const MinibatchStddevShape& s);
};

namespace DEFAULT { MinibatchStddevKernels minibatch_stddev_kernels(); }
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 { MinibatchStddevKernels minibatch_stddev_kernels(); }
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 { MinibatchStddevKernels minibatch_stddev_kernels(); }
#endif

}  // namespace medkern::cpu
