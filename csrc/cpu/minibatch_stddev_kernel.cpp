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

#include <algorithm>
#include <vector>

#include "minibatch_stddev_kernel.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kChunk = 4096;           // (channel, pixel) items per partial sum
constexpr int64_t kItemGrain = 1 << 12;    // items a thread takes at least in the backward

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
      const int64_t t_end = std::min(per_stat, (chunk + 1) * kChunk);
      U sum(0);
      for (int64_t t = chunk * kChunk; t < t_end; ++t) {
        const int64_t k = f * cps + t / s.hw, p = t % s.hw;
        U mean, stddev;
        minibatch_stddev_moments<U>(x + m * s.x_sn + k * s.x_sc + p * s.x_shw, member_stride, s.group, mean, stddev);
        sum += stddev;
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
  const int64_t x_member = s.groups * s.x_sn, o_member = s.groups * s.o_sn;
  const int64_t items = s.groups * s.c * s.hw;
  at::parallel_for(0, items, kItemGrain, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t m = q / (s.c * s.hw), r = q % (s.c * s.hw);
      const int64_t k = r / s.hw, p = r % s.hw;
      const int64_t xo = m * s.x_sn + k * s.x_sc + p * s.x_shw;
      const int64_t go = m * s.o_sn + k * s.o_sc + p * s.o_shw;
      U mean, stddev;
      minibatch_stddev_moments<U>(x + xo, x_member, s.group, mean, stddev);
      const U coef = a[m * s.num_channels + k / cps];
      for (int64_t g = 0; g < s.group; ++g) {
        gx[xo + g * x_member] = static_cast<scalar_t>(minibatch_stddev_grad(
            static_cast<U>(grad[go + g * o_member]), static_cast<U>(x[xo + g * x_member]), mean, stddev, coef, s.group));
      }
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
