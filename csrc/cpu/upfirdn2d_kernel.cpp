// CPU kernel of medkern::upfirdn2d, compiled once per CPU capability (see setup.py). The tap
// geometry is csrc/common/upfirdn2d.h's tap_run, as in the CUDA kernel, and every output sums
// the same products in the same order as its tap_sum (rows of taps outer, columns inner).
//
// Work is cut into tasks of whole output rows of one (n, c) plane, run in parallel. A task
// first copies the input rows and columns it reads into a buffer in the op-math type, with
// zeros where the padding lies outside the input, so the loops read without bounds checks and
// half types are converted once. Along x, outputs fall into P = up / gcd(up, down) phases:
// outputs ox = r + q P of phase r share their first tap and tap count, and their inputs advance
// by S = down / gcd(up, down) per q. So for each tap, a phase's outputs are one strided
// multiply-add over the input row (contiguous for S = 1, which the compiler vectorizes), into
// a row accumulator, written out interleaved at the end. Only taps that land on input samples
// are computed: up = 2 with a 4-tap separable filter costs 4 multiply-adds per output. Outputs
// are independent, so results do not depend on the number of threads.

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "upfirdn2d_kernel.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kOutputsPerTask = 16384;

// The input index range [lo, hi) that tap runs read (empty runs read nothing).
struct IndexRange {
  int64_t lo = std::numeric_limits<int64_t>::max();
  int64_t hi = std::numeric_limits<int64_t>::min();

  void cover(const TapRun& r) {
    if (r.count == 0) return;
    lo = std::min(lo, r.i0);
    hi = std::max(hi, r.i0 + r.count);
  }
  int64_t length() const { return hi > lo ? hi - lo : 0; }
};

// The outputs of one phase along x: ox = first + q * period for q < count, whose tap run has
// the same k0 and taps, and input index i0 + q * step.
struct Phase {
  int64_t first;
  int64_t count;
  int64_t k0;
  int64_t taps;
  int64_t i0;
  int64_t offset;  // where the phase's outputs start in the row accumulator
};

int64_t gcd(int64_t a, int64_t b) { return b == 0 ? a : gcd(b, a % b); }

// acc[q] += c * src[q * step] for q < n; the step-1 loop is the one to vectorize.
template <typename U>
inline void multiply_add(U* __restrict__ acc, const U* __restrict__ src, U c, int64_t n, int64_t step) {
  if (step == 1) {
    for (int64_t q = 0; q < n; ++q) acc[q] += c * src[q];
  } else {
    for (int64_t q = 0; q < n; ++q) acc[q] += c * src[q * step];
  }
}

template <typename T>
void forward(const UpFirDn2dPointers& ptr, const UpFirDn2dProblem& p) {
  using U = at::opmath_type<T>;
  const T* x = static_cast<const T*>(ptr.x);
  const U* taps = static_cast<const U*>(ptr.taps);
  T* out = static_cast<T*>(ptr.out);
  const UpFirDnAxis ax = p.x, ay = p.y;
  const int64_t xs[4] = {p.in_strides[0], p.in_strides[1], p.in_strides[2], p.in_strides[3]};
  const int64_t os[4] = {p.out_strides[0], p.out_strides[1], p.out_strides[2], p.out_strides[3]};

  const int64_t g = gcd(ax.up, ax.down), period = ax.up / g, step = ax.down / g;
  std::vector<Phase> phases;
  IndexRange cols;
  for (int64_t r = 0, offset = 0; r < std::min(period, ax.out); ++r) {
    const TapRun run = tap_run(ax, r);
    const int64_t count = (ax.out - r + period - 1) / period;
    phases.push_back({r, count, run.k0, run.count, run.i0, offset});
    offset += count;
    cols.cover(run);
    cols.cover(tap_run(ax, r + (count - 1) * period));
  }
  const int64_t width = cols.length();
  const int64_t rows_per_task = std::max<int64_t>(1, kOutputsPerTask / ax.out);
  const int64_t blocks = (ay.out + rows_per_task - 1) / rows_per_task;

  at::parallel_for(0, p.batch * p.channels * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<U> buffer, acc(ax.out);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t plane = task / blocks, n = plane / p.channels, c = plane % p.channels;
      const int64_t oy_begin = (task % blocks) * rows_per_task;
      const int64_t oy_end = std::min(ay.out, oy_begin + rows_per_task);
      IndexRange rows;
      for (int64_t oy = oy_begin; oy < oy_end; ++oy) rows.cover(tap_run(ay, oy));

      // the input samples this task reads, zero outside the input
      buffer.assign(rows.length() * width, U(0));
      const T* x_plane = x + n * xs[0] + c * xs[1];
      const int64_t ix_begin = std::max<int64_t>(cols.lo, 0), ix_end = std::min(cols.hi, ax.in);
      for (int64_t iy = std::max<int64_t>(rows.lo, 0); iy < std::min(rows.hi, ay.in); ++iy) {
        U* dst = buffer.data() + (iy - rows.lo) * width - cols.lo;
        const T* src = x_plane + iy * xs[2];
        for (int64_t ix = ix_begin; ix < ix_end; ++ix) dst[ix] = static_cast<U>(src[ix * xs[3]]);
      }

      T* out_plane = out + n * os[0] + c * os[1];
      for (int64_t oy = oy_begin; oy < oy_end; ++oy) {
        const TapRun ry = tap_run(ay, oy);
        std::fill(acc.begin(), acc.end(), U(0));
        for (int64_t a = 0; a < ry.count; ++a) {
          const U* row = buffer.data() + (ry.i0 + a - rows.lo) * width - cols.lo;  // indexed by input column
          const U* tap_row = taps + (ry.k0 + a * ay.up) * ax.taps;
          for (const Phase& ph : phases) {
            for (int64_t b = 0; b < ph.taps; ++b) {
              multiply_add(acc.data() + ph.offset, row + ph.i0 + b, tap_row[ph.k0 + b * ax.up], ph.count, step);
            }
          }
        }
        T* out_row = out_plane + oy * os[2];
        for (const Phase& ph : phases) {
          const U* src = acc.data() + ph.offset;
          for (int64_t q = 0; q < ph.count; ++q) out_row[(ph.first + q * period) * os[3]] = static_cast<T>(src[q]);
        }
      }
    }
  });
}

void forward_any(at::ScalarType dtype, const UpFirDn2dPointers& ptr, const UpFirDn2dProblem& problem) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::upfirdn2d_cpu",
                                  [&] { forward<scalar_t>(ptr, problem); });
}

}  // namespace

UpFirDn2dKernels upfirdn2d_kernels() { return {&forward_any}; }

}  // namespace medkern::cpu::CPU_CAPABILITY
