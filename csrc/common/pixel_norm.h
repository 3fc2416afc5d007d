#pragma once
// pixel_norm's math at one position (one index of every dim but `dim`), shared by the CPU and
// CUDA kernels. With the C values x_c along dim:
//   r    = rsqrt(sum_c x_c^2 / C + eps)
//   y_c  = x_c * r
//   gx_c = r * g_c - x_c * r^3 * (sum_k g_k x_k) / C
// U is the arithmetic type: float for float, half and bfloat16 tensors; double for double.
// The kernels sum along dim in channel order, one position at a time (deterministic).

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "channel_layout.h"

namespace medkern {

C10_HOST_DEVICE inline float pixel_norm_sqrt(float v) { return ::sqrtf(v); }
C10_HOST_DEVICE inline double pixel_norm_sqrt(double v) { return ::sqrt(v); }

// r from the sum of squares along dim.
template <typename U>
C10_HOST_DEVICE inline U pixel_norm_scale(U sum_sq, int64_t channels, U eps) {
  return U(1) / pixel_norm_sqrt(sum_sq / static_cast<U>(channels) + eps);
}

template <typename U>
C10_HOST_DEVICE inline U pixel_norm_forward(U x, U r) {
  return x * r;
}

// The gradient of one element, from r and the position's sum of grad * x along dim.
template <typename U>
C10_HOST_DEVICE inline U pixel_norm_grad(U g, U x, U r, U dot, int64_t channels) {
  return r * g - x * (r * r * r) * (dot / static_cast<U>(channels));
}

// Element (position p, channel c) of a tensor seen as [outer, channels, inner] in memory
// order (csrc/common/layout.h), positions numbered o * inner + i.
C10_HOST_DEVICE inline int64_t pixel_norm_offset(const ChannelLayout& l, int64_t p, int64_t c) {
  const int64_t o = p / l.inner, i = p % l.inner;
  return (o * l.channels + c) * l.inner + i;
}

}  // namespace medkern
