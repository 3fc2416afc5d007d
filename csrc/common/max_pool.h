#pragma once
// max_pool's math, shared by the CPU and CUDA kernels: the window of one output element and its
// largest value, and the gradient of one input element. The CUDA backward gathers, one thread
// per input element, the gradients of the outputs whose argmax names it (max_pool_grad), so no
// two threads write one element; the CPU backward scatters each output's gradient to the input
// its argmax names (max_pool_tap_offset), which costs less there when stride > 1.
//
// Every tensor is seen as (N, C, D, H, W): 1-d and 2-d pools get leading spatial dims of size 1
// (window 1, stride 1, no padding). Planar tensors (contiguous) have W innermost; channels-last
// ones have C innermost. The window position of its largest value (kd * KH + kh) * KW + kw,
// the "argmax", is what backward needs: one byte per output instead of torch's int64 index.
// Ties go to the first position in window order and a NaN wins over any number (a later NaN
// over an earlier one), as in torch; so do the gradients.

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace medkern {

// Window positions an argmax byte names, 0..254; kMaxPoolNoElement marks an output whose window
// holds no input element (dilation can step over a whole input), -inf as in torch, no gradient.
constexpr int64_t kMaxPoolWindowLimit = 255;
constexpr uint8_t kMaxPoolNoElement = 255;

struct MaxPoolShape {
  int64_t n, c;
  int64_t in[3], out[3];  // (D, H, W) of the input and the output
  int64_t kernel[3], stride[3], padding[3], dilation[3];
  bool channels_last;

  C10_HOST_DEVICE int64_t in_plane() const { return in[0] * in[1] * in[2]; }
  C10_HOST_DEVICE int64_t out_plane() const { return out[0] * out[1] * out[2]; }
};

// The offset of element (n, c, d, h, w) of a tensor with spatial size `size` in the shape's layout.
C10_HOST_DEVICE inline int64_t max_pool_offset(const MaxPoolShape& s, const int64_t* size, int64_t n, int64_t c,
                                               int64_t d, int64_t h, int64_t w) {
  const int64_t spatial = (d * size[1] + h) * size[2] + w;
  const int64_t plane = size[0] * size[1] * size[2];
  return s.channels_last ? (n * plane + spatial) * s.c + c : (n * s.c + c) * plane + spatial;
}

// The input index along one axis of window position k of output o.
C10_HOST_DEVICE inline int64_t max_pool_input_of(const MaxPoolShape& s, int axis, int64_t o, int64_t k) {
  return o * s.stride[axis] - s.padding[axis] + k * s.dilation[axis];
}

// The argmax byte of window position (kd, kh, kw), and back.
C10_HOST_DEVICE inline int64_t max_pool_position(const MaxPoolShape& s, int64_t kd, int64_t kh, int64_t kw) {
  return (kd * s.kernel[1] + kh) * s.kernel[2] + kw;
}

C10_HOST_DEVICE inline void max_pool_split(const MaxPoolShape& s, int64_t k, int64_t* kd, int64_t* kh, int64_t* kw) {
  *kw = k % s.kernel[2];
  *kh = (k / s.kernel[2]) % s.kernel[1];
  *kd = k / (s.kernel[2] * s.kernel[1]);
}

// Offset within an input plane ((d * H + h) * W + w) of window position k from the window's
// origin (output o's window position 0, possibly in the padding).
C10_HOST_DEVICE inline int64_t max_pool_tap_offset(const MaxPoolShape& s, int64_t k) {
  int64_t kd, kh, kw;
  max_pool_split(s, k, &kd, &kh, &kw);
  return (kd * s.dilation[0] * s.in[1] + kh * s.dilation[1]) * s.in[2] + kw * s.dilation[2];
}

// Whether v replaces the best value so far (torch's rule: larger, or NaN).
template <typename U>
C10_HOST_DEVICE inline bool max_pool_replaces(U v, U best) {
  return v > best || v != v;
}

// The largest value in the window of output (n, c, o[0], o[1], o[2]) and its window position
// (-inf and kMaxPoolNoElement for a window without an input element).
template <typename scalar_t, typename U>
C10_HOST_DEVICE inline void max_pool_window(const scalar_t* x, const MaxPoolShape& s, int64_t n, int64_t c,
                                            const int64_t* o, U* value, uint8_t* argmax) {
  U best = U(0);
  int64_t best_k = -1;
  for (int64_t kd = 0; kd < s.kernel[0]; ++kd) {
    const int64_t d = max_pool_input_of(s, 0, o[0], kd);
    if (d < 0 || d >= s.in[0]) continue;
    for (int64_t kh = 0; kh < s.kernel[1]; ++kh) {
      const int64_t h = max_pool_input_of(s, 1, o[1], kh);
      if (h < 0 || h >= s.in[1]) continue;
      for (int64_t kw = 0; kw < s.kernel[2]; ++kw) {
        const int64_t w = max_pool_input_of(s, 2, o[2], kw);
        if (w < 0 || w >= s.in[2]) continue;
        const U v = static_cast<U>(x[max_pool_offset(s, s.in, n, c, d, h, w)]);
        if (best_k < 0 || max_pool_replaces(v, best)) {
          best = v;
          best_k = max_pool_position(s, kd, kh, kw);
        }
      }
    }
  }
  *value = best_k < 0 ? -static_cast<U>(INFINITY) : best;
  *argmax = best_k < 0 ? kMaxPoolNoElement : static_cast<uint8_t>(best_k);
}

// floor(a / b) for b > 0 and any a.
C10_HOST_DEVICE inline int64_t max_pool_floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// The outputs along one axis whose window may hold input index i: [*first, *last] (may be empty).
C10_HOST_DEVICE inline void max_pool_sources(const MaxPoolShape& s, int axis, int64_t i, int64_t* first,
                                             int64_t* last) {
  const int64_t reach = (s.kernel[axis] - 1) * s.dilation[axis];
  const int64_t lo = -max_pool_floor_div(-(i + s.padding[axis] - reach), s.stride[axis]);  // ceil
  const int64_t hi = max_pool_floor_div(i + s.padding[axis], s.stride[axis]);
  *first = lo > 0 ? lo : 0;
  *last = hi < s.out[axis] - 1 ? hi : s.out[axis] - 1;
}

// The window position of input index i in output o's window along one axis, or -1 if the window
// steps over i (dilation).
C10_HOST_DEVICE inline int64_t max_pool_tap(const MaxPoolShape& s, int axis, int64_t i, int64_t o) {
  const int64_t r = i - max_pool_input_of(s, axis, o, 0);
  return r % s.dilation[axis] == 0 ? r / s.dilation[axis] : -1;
}

// Calls fn(od, oh, ow, k) for each output whose window holds input element i (in output order),
// k being i's window position in it.
template <typename Fn>
C10_HOST_DEVICE inline void max_pool_for_each_source(const MaxPoolShape& s, const int64_t* i, Fn&& fn) {
  int64_t first[3], last[3];
  for (int axis = 0; axis < 3; ++axis) max_pool_sources(s, axis, i[axis], &first[axis], &last[axis]);
  for (int64_t od = first[0]; od <= last[0]; ++od) {
    const int64_t kd = max_pool_tap(s, 0, i[0], od);
    if (kd < 0) continue;
    for (int64_t oh = first[1]; oh <= last[1]; ++oh) {
      const int64_t kh = max_pool_tap(s, 1, i[1], oh);
      if (kh < 0) continue;
      for (int64_t ow = first[2]; ow <= last[2]; ++ow) {
        const int64_t kw = max_pool_tap(s, 2, i[2], ow);
        if (kw >= 0) fn(od, oh, ow, max_pool_position(s, kd, kh, kw));
      }
    }
  }
}

// The gradient of input element (n, c, i[0], i[1], i[2]): the sum of the output gradients whose
// argmax is this element, in output order.
template <typename scalar_t, typename U>
C10_HOST_DEVICE inline U max_pool_grad(const scalar_t* grad, const uint8_t* argmax, const MaxPoolShape& s, int64_t n,
                                       int64_t c, const int64_t* i) {
  U sum = U(0);
  max_pool_for_each_source(s, i, [&](int64_t od, int64_t oh, int64_t ow, int64_t k) {
    const int64_t at = max_pool_offset(s, s.out, n, c, od, oh, ow);
    if (argmax[at] == k) sum += static_cast<U>(grad[at]);
  });
  return sum;
}

}  // namespace medkern
