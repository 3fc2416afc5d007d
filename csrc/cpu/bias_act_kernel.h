#pragma once
// The interface between medkern::bias_act's CPU op (bias_act.cpp) and its kernels
// (bias_act_kernel.cpp, compiled once per CPU capability). Plain pointers and structs only,
// so that the per-capability objects share no at::Tensor code with the rest of the library.

#include <c10/core/ScalarType.h>

#include <string>

#include "../common/bias_act.h"
#include "../common/channel_layout.h"

namespace medkern::cpu {

// Data of one call, all dense in the same memory order: x (and g, the incoming gradient, in
// the backward) in; out (y or gx) out; b the bias or null; bias_grad the per-channel sum of
// gx out, or null when not wanted.
struct BiasActPointers {
  const void* g;
  const void* x;
  const void* b;
  void* out;
  void* bias_grad;
};

struct BiasActKernels {
  void (*forward)(at::ScalarType dtype, const BiasActPointers& ptr, const ChannelLayout& l, const BiasActArgs& args);
  void (*grad)(at::ScalarType dtype, int64_t order, const BiasActPointers& ptr, const ChannelLayout& l,
               const BiasActArgs& args);
};

// One per compiled capability; see MEDKERN_CPU_CAPABILITIES in setup.py.
namespace DEFAULT { BiasActKernels bias_act_kernels(); }
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 { BiasActKernels bias_act_kernels(); }
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 { BiasActKernels bias_act_kernels(); }
#endif

}  // namespace medkern::cpu
