// CPU kernels of medkern::pixel_norm and medkern::pixel_norm_backward, compiled once for each
// CPU capability into namespace medkern::cpu::CPU_CAPABILITY; csrc/cpu/pixel_norm.cpp picks one.
// Raw pointers only.
//
// x is walked in memory order as [outer, channels, inner]. A position is one (outer, inner)
// pair; positions are shared out among threads, and a run of up to kRun positions with the same
// outer index (contiguous in memory) is summed side by side over the channels, each position in
// channel order, so results do not depend on how the positions are split. Sums are in the
// op-math type (float for float16 and bfloat16). The math is csrc/common/pixel_norm.h.

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "../common/pixel_norm.h"
#include "pixel_norm_kernel.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kRun = 256;               // positions summed side by side
constexpr int64_t kTaskElements = 1 << 15;  // elements a thread takes at least

// Calls fn(p, len) for runs of positions [p, p + len) inside one outer index, covering [begin, end).
template <typename Fn>
void for_each_run(const ChannelLayout& l, int64_t begin, int64_t end, Fn&& fn) {
  for (int64_t p = begin; p < end;) {
    const int64_t len = std::min({end - p, kRun, l.inner - p % l.inner});
    fn(p, len);
    p += len;
  }
}

int64_t grain(const ChannelLayout& l) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, l.channels)); }

template <typename scalar_t>
void forward_kernel(const scalar_t* x, scalar_t* y, const ChannelLayout& l, double eps_value) {
  using U = at::opmath_type<scalar_t>;
  const U eps = static_cast<U>(eps_value);
  at::parallel_for(0, l.outer * l.inner, grain(l), [&](int64_t begin, int64_t end) {
    U r[kRun];
    for_each_run(l, begin, end, [&](int64_t p, int64_t len) {
      const int64_t base = pixel_norm_offset(l, p, 0);
      std::fill(r, r + len, U(0));
      for (int64_t c = 0; c < l.channels; ++c) {
        const scalar_t* xc = x + base + c * l.inner;
        for (int64_t j = 0; j < len; ++j) {
          const U v = static_cast<U>(xc[j]);
          r[j] += v * v;
        }
      }
      for (int64_t j = 0; j < len; ++j) r[j] = pixel_norm_scale(r[j], l.channels, eps);
      for (int64_t c = 0; c < l.channels; ++c) {
        const scalar_t* xc = x + base + c * l.inner;
        scalar_t* yc = y + base + c * l.inner;
        for (int64_t j = 0; j < len; ++j) yc[j] = static_cast<scalar_t>(pixel_norm_forward(static_cast<U>(xc[j]), r[j]));
      }
    });
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* g, const scalar_t* x, scalar_t* gx, const ChannelLayout& l, double eps_value) {
  using U = at::opmath_type<scalar_t>;
  const U eps = static_cast<U>(eps_value);
  at::parallel_for(0, l.outer * l.inner, grain(l), [&](int64_t begin, int64_t end) {
    U r[kRun], dot[kRun];
    for_each_run(l, begin, end, [&](int64_t p, int64_t len) {
      const int64_t base = pixel_norm_offset(l, p, 0);
      std::fill(r, r + len, U(0));
      std::fill(dot, dot + len, U(0));
      for (int64_t c = 0; c < l.channels; ++c) {
        const scalar_t* xc = x + base + c * l.inner;
        const scalar_t* gc = g + base + c * l.inner;
        for (int64_t j = 0; j < len; ++j) {
          const U v = static_cast<U>(xc[j]);
          r[j] += v * v;
          dot[j] += static_cast<U>(gc[j]) * v;
        }
      }
      for (int64_t j = 0; j < len; ++j) r[j] = pixel_norm_scale(r[j], l.channels, eps);
      for (int64_t c = 0; c < l.channels; ++c) {
        const scalar_t* xc = x + base + c * l.inner;
        const scalar_t* gc = g + base + c * l.inner;
        scalar_t* oc = gx + base + c * l.inner;
        for (int64_t j = 0; j < len; ++j) {
          oc[j] = static_cast<scalar_t>(
              pixel_norm_grad(static_cast<U>(gc[j]), static_cast<U>(xc[j]), r[j], dot[j], l.channels));
        }
      }
    });
  });
}

void forward(at::ScalarType dtype, const void* x, void* y, const ChannelLayout& l, double eps) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::pixel_norm", [&] {
    forward_kernel<scalar_t>(static_cast<const scalar_t*>(x), static_cast<scalar_t*>(y), l, eps);
  });
}

void backward(at::ScalarType dtype, const void* g, const void* x, void* gx, const ChannelLayout& l, double eps) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::pixel_norm_backward", [&] {
    backward_kernel<scalar_t>(static_cast<const scalar_t*>(g), static_cast<const scalar_t*>(x),
                              static_cast<scalar_t*>(gx), l, eps);
  });
}

}  // namespace

PixelNormKernels pixel_norm_kernels() { return {&forward, &backward}; }

}  // namespace medkern::cpu::CPU_CAPABILITY
