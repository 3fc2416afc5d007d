#pragma once
// The math of medkern::upfirdn2d, shared by the CPU kernel (csrc/cpu/upfirdn2d_kernel.cpp) and
// the CUDA kernel (csrc/cuda/upfirdn2d.cu). The definition is medkern/reference/upfirdn2d.py:
// along each axis, output sample o sums taps[k] * v[o * down + k] over the correlation taps k
// of the padded, zero-inserted input v. Only taps landing on an input sample (not on an
// inserted zero) contribute: those are k = k0, k0 + up, k0 + 2 up, ... with input indices
// i0, i0 + 1, i0 + 2, ... (polyphase form), so no work is spent on the zeros.

#include <c10/macros/Macros.h>

#include <cstdint>

namespace medkern {

// One axis of the problem: input and output lengths, factors, leading padding, filter length.
struct UpFirDnAxis {
  int64_t in;
  int64_t out;
  int64_t up;
  int64_t down;
  int64_t pad0;
  int64_t taps;
};

// Output sample o's first contributing tap k0, its input index i0 (possibly outside [0, in):
// those samples are zero) and the number of taps k0 + j * up below `taps`.
struct TapRun {
  int64_t k0;
  int64_t i0;
  int64_t count;
};

C10_HOST_DEVICE inline TapRun tap_run(const UpFirDnAxis& a, int64_t o) {
  const int64_t j = o * a.down - a.pad0;  // where tap 0 falls in the zero-inserted input
  int64_t k0 = (-j) % a.up;               // the first k with (j + k) % up == 0
  if (k0 < 0) k0 += a.up;
  const int64_t count = k0 < a.taps ? (a.taps - k0 + a.up - 1) / a.up : 0;
  return {k0, (j + k0) / a.up, count};  // j + k0 is a multiple of up: the division is exact
}

// Output length along an axis: (in * up + pad0 + pad1 - taps) // down + 1 (callers check >= 1).
C10_HOST_DEVICE inline int64_t upfirdn_out_length(int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t pad1,
                                                  int64_t taps) {
  const int64_t span = in * up + pad0 + pad1 - taps;
  return span < 0 ? 0 : span / down + 1;
}

// sum over a < ry.count, b < rx.count of taps[(ry.k0 + a * up_y) * taps_w + rx.k0 + b * up_x] *
// load(a, b), where load(a, b) reads input sample (ry.i0 + a, rx.i0 + b) (zero outside).
// `taps` are the 2-D correlation taps in the op-math type U, row-major with taps_w columns.
template <typename U, typename Load>
C10_HOST_DEVICE inline U tap_sum(const U* taps, int64_t taps_w, const TapRun& ry, int64_t up_y, const TapRun& rx,
                                 int64_t up_x, Load&& load) {
  U acc = U(0);
  for (int64_t a = 0; a < ry.count; ++a) {
    const U* row = taps + (ry.k0 + a * up_y) * taps_w + rx.k0;
    for (int64_t b = 0; b < rx.count; ++b) acc += row[b * up_x] * load(a, b);
  }
  return acc;
}

}  // namespace medkern

namespace medkern {

// One call: x (batch, channels, in_h, in_w) and out (batch, channels, out_h, out_w) with
// their element strides in (n, c, h, w) order; taps (y.taps, x.taps) row-major.
struct UpFirDn2dProblem {
  int64_t batch;
  int64_t channels;
  UpFirDnAxis x;  // width
  UpFirDnAxis y;  // height
  int64_t in_strides[4];
  int64_t out_strides[4];
};

}  // namespace medkern
