// CPU kernels of medkern::minibatch_stddev and medkern::minibatch_stddev_backward, compiled once
// for each CPU capability into namespace medkern::cpu::CPU_CAPABILITY. Raw pointers only.
//
// Forward: each statistic (m, f) averages s over its C / F channels and H * W pixels; that
// stretch is cut into chunks of kChunk (channel, pixel) items, a task each, whose partial sums
// are added in chunk order, so results do not depend on the number of threads. Backward: each
// (m, f) sums its upstream gradient serially, then every (m, channel, pixel) writes its G
// members' gradients. Arithmetic in the op-math type (float for float16 and bfloat16); the math
// is csrc/common/minibatch_stddev.h.

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "minibatch_stddev_kernel.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kChunk = 4096;           // (channel, pixel) items per partial sum
constexpr int64_t kItemGrain = 1 << 12;    // items a thread takes at least in the backward

// Vectorized over pixels where x (and grad) are contiguous along them and scalar_t is its own
// op-math type: each lane runs the scalar formula, so the per-element results are the same.
template <typename scalar_t>
constexpr bool kVectorized = std::is_same_v<scalar_t, at::opmath_type<scalar_t>>;

// The sum of s over pixels [0, len) from x (the first member at pixel 0), pixel stride shw.
template <typename scalar_t>
at::opmath_type<scalar_t> stddev_sum(const scalar_t* x, int64_t len, int64_t shw, int64_t member, int64_t group) {
  using U = at::opmath_type<scalar_t>;
  U sum(0);
  int64_t p = 0;
  if constexpr (kVectorized<scalar_t>) {
    using Vec = at::vec::Vectorized<scalar_t>;
    if (shw == 1 && len >= Vec::size()) {
      const Vec g_count(static_cast<U>(group)), eps(static_cast<U>(kMinibatchStddevEps));
      Vec acc(U(0));
      for (; p + Vec::size() <= len; p += Vec::size()) {
        Vec total(U(0));
        for (int64_t g = 0; g < group; ++g) total = total + Vec::loadu(x + p + g * member);
        const Vec mean = total / g_count;
        Vec sum_sq(U(0));
        for (int64_t g = 0; g < group; ++g) {
          const Vec d = Vec::loadu(x + p + g * member) - mean;
          sum_sq = sum_sq + d * d;
        }
        acc = acc + (sum_sq / g_count + eps).sqrt();
      }
      U lanes[Vec::size()];
      acc.store(lanes);
      for (int64_t i = 0; i < Vec::size(); ++i) sum += lanes[i];
    }
  }
  for (; p < len; ++p) {
    U mean, stddev;
    minibatch_stddev_moments<U>(x + p * shw, member, group, mean, stddev);
    sum += stddev;
  }
  return sum;
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, scalar_t* out, const MinibatchStddevShape& s) {
  using U = at::opmath_type<scalar_t>;
  const int64_t cps = s.channels_per_stat();
  const int64_t per_stat = cps * s.hw;
  const int64_t chunks = (per_stat + kChunk - 1) / kChunk;
  const int64_t stats = s.groups * s.num_channels;
  const int64_t member_stride = s.groups * s.x_sn;
  std::vector<U> partial(stats * chunks, U(0));
  at::parallel_for(0, stats * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t stat = task / chunks, chunk = task % chunks;
      const int64_t m = stat / s.num_channels, f = stat % s.num_channels;
      const int64_t t_begin = chunk * kChunk, t_end = std::min(per_stat, t_begin + kChunk);
      U sum(0);
      // the chunk's items t = (channel k of f) * hw + pixel p, a run of pixels per channel
      for (int64_t t = t_begin; t < t_end;) {
        const int64_t k = f * cps + t / s.hw, p = t % s.hw;
        const int64_t len = std::min(s.hw - p, t_end - t);
        sum += stddev_sum(x + m * s.x_sn + k * s.x_sc + p * s.x_shw, len, s.x_shw, member_stride, s.group);
        t += len;
      }
      partial[task] = sum;
    }
  });
  std::vector<scalar_t> value(stats);
  for (int64_t stat = 0; stat < stats; ++stat) {
    U total(0);
    for (int64_t chunk = 0; chunk < chunks; ++chunk) total += partial[stat * chunks + chunk];
    value[stat] = static_cast<scalar_t>(total / static_cast<U>(per_stat));
  }
  at::parallel_for(0, s.n, std::max<int64_t>(1, kItemGrain / (s.hw * s.num_channels)), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t f = 0; f < s.num_channels; ++f) {
        const scalar_t v = value[(n % s.groups) * s.num_channels + f];
        scalar_t* o = out + n * s.o_sn + (s.c + f) * s.o_sc;
        for (int64_t p = 0; p < s.hw; ++p) o[p * s.o_shw] = v;
      }
    }
  });
}

// The G members' gradients over pixels [0, len) of one (m, channel): x, grad and gx at pixel 0
// of the first member; a the channel's coefficient.
template <typename scalar_t>
void grad_run(const scalar_t* grad, const scalar_t* x, scalar_t* gx, int64_t len, const MinibatchStddevShape& s,
              at::opmath_type<scalar_t> a) {
  using U = at::opmath_type<scalar_t>;
  const int64_t x_member = s.groups * s.x_sn, o_member = s.groups * s.o_sn;
  int64_t p = 0;
  if constexpr (kVectorized<scalar_t>) {
    using Vec = at::vec::Vectorized<scalar_t>;
    if (s.x_shw == 1 && s.o_shw == 1) {
      const Vec g_count(static_cast<U>(s.group)), eps(static_cast<U>(kMinibatchStddevEps)), coef(a);
      for (; p + Vec::size() <= len; p += Vec::size()) {
        Vec total(U(0));
        for (int64_t g = 0; g < s.group; ++g) total = total + Vec::loadu(x + p + g * x_member);
        const Vec mean = total / g_count;
        Vec sum_sq(U(0));
        for (int64_t g = 0; g < s.group; ++g) {
          const Vec d = Vec::loadu(x + p + g * x_member) - mean;
          sum_sq = sum_sq + d * d;
        }
        const Vec stddev = (sum_sq / g_count + eps).sqrt();
        for (int64_t g = 0; g < s.group; ++g) {  // minibatch_stddev_grad, lane by lane
          const Vec xg = Vec::loadu(x + p + g * x_member);
          const Vec gg = Vec::loadu(grad + p + g * o_member);
          (gg + coef * (xg - mean) / (g_count * stddev)).store(gx + p + g * x_member);
        }
      }
    }
  }
  for (; p < len; ++p) {
    const int64_t xo = p * s.x_shw, go = p * s.o_shw;
    U mean, stddev;
    minibatch_stddev_moments<U>(x + xo, x_member, s.group, mean, stddev);
    for (int64_t g = 0; g < s.group; ++g) {
      gx[xo + g * x_member] = static_cast<scalar_t>(minibatch_stddev_grad(
          static_cast<U>(grad[go + g * o_member]), static_cast<U>(x[xo + g * x_member]), mean, stddev, a, s.group));
    }
  }
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad, const scalar_t* x, scalar_t* gx, const MinibatchStddevShape& s) {
  using U = at::opmath_type<scalar_t>;
  const int64_t cps = s.channels_per_stat();
  const int64_t stats = s.groups * s.num_channels;
  std::vector<U> a(stats);
  at::parallel_for(0, stats, 1, [&](int64_t begin, int64_t end) {
    for (int64_t stat = begin; stat < end; ++stat) {
      const int64_t m = stat / s.num_channels, f = stat % s.num_channels;
      U sum(0);
      for (int64_t g = 0; g < s.group; ++g) {
        const scalar_t* gp = grad + (g * s.groups + m) * s.o_sn + (s.c + f) * s.o_sc;
        for (int64_t p = 0; p < s.hw; ++p) sum += static_cast<U>(gp[p * s.o_shw]);
      }
      a[stat] = sum / static_cast<U>(cps * s.hw);
    }
  });
  // rows (m, channel k), each a run of hw pixels
  const int64_t rows = s.groups * s.c;
  at::parallel_for(0, rows, std::max<int64_t>(1, kItemGrain / std::max<int64_t>(1, s.hw)), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t m = row / s.c, k = row % s.c;
      const int64_t xo = m * s.x_sn + k * s.x_sc, go = m * s.o_sn + k * s.o_sc;
      grad_run(grad + go, x + xo, gx + xo, s.hw, s, a[m * s.num_channels + k / cps]);
    }
  });
}

void forward(at::ScalarType dtype, const void* x, void* out, const MinibatchStddevShape& s) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::minibatch_stddev", [&] {
    forward_kernel<scalar_t>(static_cast<const scalar_t*>(x), static_cast<scalar_t*>(out), s);
  });
}

void backward(at::ScalarType dtype, const void* grad, const void* x, void* gx, const MinibatchStddevShape& s) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::minibatch_stddev_backward", [&] {
    backward_kernel<scalar_t>(static_cast<const scalar_t*>(grad), static_cast<const scalar_t*>(x),
                              static_cast<scalar_t*>(gx), s);
  });
}

}  // namespace

MinibatchStddevKernels minibatch_stddev_kernels() { return {&forward, &backward}; }

}  // namespace medkern::cpu::CPU_CAPABILITY
