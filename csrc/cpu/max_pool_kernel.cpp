// CPU kernels of medkern::max_pool and medkern::max_pool_backward, compiled once for each CPU
// capability into namespace medkern::cpu::CPU_CAPABILITY; csrc/cpu/max_pool.cpp picks one.
// Raw pointers only; the math (window positions, torch's comparison) is csrc/common/max_pool.h.
//
// Forward: a run of up to kRun outputs along the innermost dim (W when planar, C when channels
// last) is swept tap by tap in window order, each tap over the whole run, so the loads of one
// tap are regular and the window order of every output (which decides ties) is kept.
// Backward: each output's gradient is added to the input its argmax names, in output order, by
// the thread that owns that input's (sample, channel); float and double in dx itself, half types
// in a float buffer rounded once. The result does not depend on the thread count. (The CUDA
// kernel gathers instead, max_pool_grad; on a CPU a scatter does less work when stride > 1.)

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/max_pool.h"
#include "max_pool_kernel.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kRun = 256;               // outputs swept side by side
constexpr int64_t kTaskElements = 1 << 15;  // elements a thread takes at least
constexpr int64_t kChannelBlock = 64;       // channels per backward task (channels last)

int64_t grain(int64_t per_item) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, per_item)); }

// The best values of a run of outputs, swept tap by tap. They start at -inf with no position,
// so a tap is a branch-free compare; an output whose window holds only -inf ends without one and
// takes max_pool_window's answer (its first position), as torch's.
template <typename U>
struct Run {
  U best[kRun];
  int32_t arg[kRun];

  void start(int64_t len) {
    std::fill(best, best + len, -std::numeric_limits<U>::infinity());
    std::fill(arg, arg + len, -1);
  }

  // Offers values at[j * step] (j in [lo, hi)) as window position k.
  template <typename scalar_t>
  void offer(const scalar_t* at, int64_t step, int64_t lo, int64_t hi, int32_t k) {
    if (step == 1) {
      offer_run(at, [](int64_t j) { return j; }, lo, hi, k);  // contiguous: vectorizes
    } else {
      offer_run(at, [step](int64_t j) { return j * step; }, lo, hi, k);
    }
  }

  // (restrict: the input never aliases the run's own arrays, which lets the compiler vectorize)
  template <typename scalar_t, typename Index>
  void offer_run(const scalar_t* __restrict__ at, Index&& index, int64_t lo, int64_t hi, int32_t k) {
    U* __restrict__ b = best;
    int32_t* __restrict__ a = arg;
    for (int64_t j = lo; j < hi; ++j) {
      const U v = static_cast<U>(at[index(j)]);
      const bool replace = max_pool_replaces(v, b[j]);
      b[j] = replace ? v : b[j];
      a[j] = replace ? k : a[j];
    }
  }

  // Writes y[j * step] and argmax[j * step]; window(j, &value, &argmax) for an output without a position.
  template <typename scalar_t, typename Window>
  void write(scalar_t* y, uint8_t* argmax, int64_t len, Window&& window) {
    for (int64_t j = 0; j < len; ++j) {
      if (arg[j] < 0) {
        uint8_t position;
        window(j, &best[j], &position);
        arg[j] = position;
      }
      y[j] = static_cast<scalar_t>(best[j]);
      argmax[j] = static_cast<uint8_t>(arg[j]);
    }
  }
};

// Calls tap(kd, kh, d, h) for the window rows of output (od, oh) inside the input, in window order.
template <typename Tap>
void for_each_window_row(const MaxPoolShape& s, int64_t od, int64_t oh, Tap&& tap) {
  for (int64_t kd = 0; kd < s.kernel[0]; ++kd) {
    const int64_t d = max_pool_input_of(s, 0, od, kd);
    if (d < 0 || d >= s.in[0]) continue;
    for (int64_t kh = 0; kh < s.kernel[1]; ++kh) {
      const int64_t h = max_pool_input_of(s, 1, oh, kh);
      if (h < 0 || h >= s.in[1]) continue;
      tap(kd, kh, d, h);
    }
  }
}

// Planar: a run is outputs [ow0, ow0 + len) of one row (n, c, od, oh).
template <typename scalar_t>
void forward_planar(const scalar_t* x, scalar_t* y, uint8_t* argmax, const MaxPoolShape& s) {
  using U = at::opmath_type<scalar_t>;
  const int64_t width = s.out[2], window = s.kernel[0] * s.kernel[1] * s.kernel[2];
  at::parallel_for(0, s.n * s.c * s.out[0] * s.out[1], grain(width * window), [&](int64_t begin, int64_t end) {
    Run<U> run;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t oh = r % s.out[1], od = r / s.out[1] % s.out[0], nc = r / (s.out[1] * s.out[0]);
      for (int64_t ow0 = 0; ow0 < width; ow0 += kRun) {
        const int64_t len = std::min(kRun, width - ow0);
        run.start(len);
        for_each_window_row(s, od, oh, [&](int64_t kd, int64_t kh, int64_t d, int64_t h) {
          const scalar_t* line = x + max_pool_offset(s, s.in, nc / s.c, nc % s.c, d, h, 0);
          for (int64_t kw = 0; kw < s.kernel[2]; ++kw) {
            const int64_t w0 = max_pool_input_of(s, 2, ow0, kw), step = s.stride[2];  // input w of run[0]
            const int64_t lo = w0 >= 0 ? 0 : (-w0 + step - 1) / step;
            const int64_t hi = std::min(len, max_pool_floor_div(s.in[2] - 1 - w0, step) + 1);
            run.offer(line + w0, step, lo, hi, static_cast<int32_t>(max_pool_position(s, kd, kh, kw)));
          }
        });
        run.write(y + r * width + ow0, argmax + r * width + ow0, len, [&](int64_t j, U* value, uint8_t* position) {
          const int64_t o[3] = {od, oh, ow0 + j};
          max_pool_window(x, s, nc / s.c, nc % s.c, o, value, position);
        });
      }
    }
  });
}

// Channels last: a run is channels [c0, c0 + len) of one output position (n, od, oh, ow).
template <typename scalar_t>
void forward_channels_last(const scalar_t* x, scalar_t* y, uint8_t* argmax, const MaxPoolShape& s) {
  using U = at::opmath_type<scalar_t>;
  const int64_t window = s.kernel[0] * s.kernel[1] * s.kernel[2];
  at::parallel_for(0, s.n * s.out_plane(), grain(s.c * window), [&](int64_t begin, int64_t end) {
    Run<U> run;
    for (int64_t p = begin; p < end; ++p) {
      const int64_t ow = p % s.out[2], oh = p / s.out[2] % s.out[1], od = p / (s.out[2] * s.out[1]) % s.out[0];
      const int64_t n = p / s.out_plane();
      for (int64_t c0 = 0; c0 < s.c; c0 += kRun) {
        const int64_t len = std::min(kRun, s.c - c0);
        run.start(len);
        for_each_window_row(s, od, oh, [&](int64_t kd, int64_t kh, int64_t d, int64_t h) {
          for (int64_t kw = 0; kw < s.kernel[2]; ++kw) {
            const int64_t w = max_pool_input_of(s, 2, ow, kw);
            if (w < 0 || w >= s.in[2]) continue;
            run.offer(x + max_pool_offset(s, s.in, n, c0, d, h, w), 1, 0, len,
                      static_cast<int32_t>(max_pool_position(s, kd, kh, kw)));
          }
        });
        run.write(y + p * s.c + c0, argmax + p * s.c + c0, len, [&](int64_t j, U* value, uint8_t* position) {
          const int64_t o[3] = {od, oh, ow};
          max_pool_window(x, s, n, c0 + j, o, value, position);
        });
      }
    }
  });
}

// Calls fn(o, origin) for every output position o of a plane, in order, with the offset within
// an input plane of its window's origin (window position 0; in the padding it is out of range).
template <typename Fn>
void for_each_output(const MaxPoolShape& s, Fn&& fn) {
  int64_t o = 0;
  for (int64_t od = 0; od < s.out[0]; ++od) {
    const int64_t d = max_pool_input_of(s, 0, od, 0);
    for (int64_t oh = 0; oh < s.out[1]; ++oh) {
      const int64_t dh = (d * s.in[1] + max_pool_input_of(s, 1, oh, 0)) * s.in[2];
      for (int64_t ow = 0; ow < s.out[2]; ++ow, ++o) fn(o, dh + max_pool_input_of(s, 2, ow, 0));
    }
  }
}

// max_pool_tap_offset of every argmax byte value. One that names no window position (an empty
// window's kMaxPoolNoElement, or an argmax not from max_pool) points out of the plane: dropped.
struct TapOffsets {
  int64_t offset[256];

  explicit TapOffsets(const MaxPoolShape& s) {
    const int64_t window = s.kernel[0] * s.kernel[1] * s.kernel[2];
    for (int64_t k = 0; k < 256; ++k) offset[k] = k < window ? max_pool_tap_offset(s, k) : -s.in_plane();
  }
  int64_t operator[](uint8_t k) const { return offset[k]; }
};

// A task is a block of channels [c0, c0 + width) of one sample: one channel (a plane) when planar,
// kChannelBlock channels when channels last. Each output's gradient is added to the input its
// argmax names, in output order; element (position p, channel c0 + j) of a plane is at
// p * kStep + j from the block's start. float and double gradients are summed in dx itself, half
// ones in a float buffer [in_plane, width], then rounded once.
template <bool ChannelsLast, typename scalar_t>
void backward_kernel(const scalar_t* grad, const uint8_t* argmax, scalar_t* dx, const MaxPoolShape& s) {
  using U = at::opmath_type<scalar_t>;
  constexpr bool in_place = std::is_same_v<U, scalar_t>;
  const int64_t block = ChannelsLast ? kChannelBlock : 1, step = ChannelsLast ? s.c : 1;
  const int64_t blocks = (s.c + block - 1) / block;
  const int64_t in_plane = s.in_plane(), out_plane = s.out_plane();
  const TapOffsets taps(s);
  at::parallel_for(0, s.n * blocks, grain(block * (in_plane + out_plane)), [&](int64_t begin, int64_t end) {
    std::vector<U> buffer;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / blocks, c0 = u % blocks * block;
      const int64_t width = ChannelsLast ? std::min(block, s.c - c0) : 1;
      const scalar_t* g = grad + max_pool_offset(s, s.out, n, c0, 0, 0, 0);
      const uint8_t* a = argmax + max_pool_offset(s, s.out, n, c0, 0, 0, 0);
      scalar_t* out = dx + max_pool_offset(s, s.in, n, c0, 0, 0, 0);
      // sums[i * row + j]: the block in dx itself, or a buffer of rows of width
      U* sums;
      int64_t row;
      if constexpr (in_place) {
        sums = out;
        row = step;
      } else {
        buffer.resize(in_plane * width);
        sums = buffer.data();
        row = width;
      }
      if (row == width) {  // one contiguous run: planar, or all channels in one block
        std::fill(sums, sums + in_plane * width, U(0));
      } else {
        for (int64_t i = 0; i < in_plane; ++i) std::fill(sums + i * row, sums + i * row + width, U(0));
      }
      for_each_output(s, [&](int64_t o, int64_t origin) {
        for (int64_t j = 0; j < width; ++j) {
          const int64_t i = origin + taps[a[o * step + j]];
          if (i >= 0 && i < in_plane) sums[i * row + j] += static_cast<U>(g[o * step + j]);
        }
      });
      if constexpr (!in_place) {
        for (int64_t i = 0; i < in_plane; ++i) {
          for (int64_t j = 0; j < width; ++j) out[i * step + j] = static_cast<scalar_t>(sums[i * width + j]);
        }
      }
    }
  });
}

void forward(at::ScalarType dtype, const void* x, void* y, uint8_t* argmax, const MaxPoolShape& s) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::max_pool", [&] {
    const auto* xs = static_cast<const scalar_t*>(x);
    auto* ys = static_cast<scalar_t*>(y);
    if (s.channels_last) {
      forward_channels_last(xs, ys, argmax, s);
    } else {
      forward_planar(xs, ys, argmax, s);
    }
  });
}

void backward(at::ScalarType dtype, const void* grad, const uint8_t* argmax, void* dx, const MaxPoolShape& s) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::max_pool_backward", [&] {
    const auto* g = static_cast<const scalar_t*>(grad);
    auto* d = static_cast<scalar_t*>(dx);
    if (s.channels_last) {
      backward_kernel<true>(g, argmax, d, s);
    } else {
      backward_kernel<false>(g, argmax, d, s);
    }
  });
}

}  // namespace

MaxPoolKernels max_pool_kernels() { return {&forward, &backward}; }

}  // namespace medkern::cpu::CPU_CAPABILITY
