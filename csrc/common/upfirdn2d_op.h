#pragma once
// Host-side argument handling of medkern::upfirdn2d, shared by the CPU and CUDA registrations:
// checks, the correlation taps in the op-math type, the problem's geometry and the output
// allocation (whose layout the fake kernel in medkern/ops/upfirdn2d.py mirrors).

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cmath>

#include "checks.h"
#include "upfirdn2d.h"

namespace medkern {

// channels_last in, channels_last out; any other input gives a contiguous output.
inline at::MemoryFormat upfirdn2d_out_format(const at::Tensor& x) {
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// The 2-D taps the kernels slide in correlation order (flipped unless flip_filter; a 1-D filter
// is separable: its outer product with itself), times gain, in x's op-math type, row-major.
inline at::Tensor upfirdn2d_taps(const at::Tensor& f, bool flip_filter, double gain, at::ScalarType x_dtype) {
  at::Tensor taps = f.to(at::toOpMathType(x_dtype));
  if (!flip_filter) taps = f.dim() == 1 ? taps.flip({0}) : taps.flip({0, 1});
  if (taps.dim() == 1) taps = at::outer(taps, taps);
  return (taps * gain).contiguous();
}

// medkern::upfirdn2d for one device: checks, builds the taps and the problem, allocates the
// output and calls run(x, taps, out, problem) when the output is not empty. x is passed with
// its own strides.
template <typename Run>
at::Tensor upfirdn2d_op(const at::Tensor& x, const at::Tensor& f, at::IntArrayRef up, at::IntArrayRef down,
                        at::IntArrayRef padding, bool flip_filter, double gain, Run&& run) {
  const char* op = "medkern::upfirdn2d";
  check_floating(op, "x", x);
  check_floating(op, "f", f);
  check_same_device(op, "f", f, x);
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x must be 4-d (N, C, H, W), got shape ", x.sizes());
  TORCH_CHECK_VALUE((f.dim() == 1 || f.dim() == 2) && f.numel() > 0, op,
                    ": f must be a non-empty 1-d (separable) or 2-d filter, got shape ", f.sizes());
  TORCH_CHECK_VALUE(up.size() == 2 && up[0] >= 1 && up[1] >= 1, op, ": up must be (x, y) factors >= 1, got ", up);
  TORCH_CHECK_VALUE(down.size() == 2 && down[0] >= 1 && down[1] >= 1, op, ": down must be (x, y) factors >= 1, got ",
                    down);
  TORCH_CHECK_VALUE(padding.size() == 4, op, ": padding must be (x0, x1, y0, y1), got ", padding);
  TORCH_CHECK_VALUE(std::isfinite(gain), op, ": gain must be finite, got ", gain);

  const int64_t taps_w = f.size(f.dim() - 1);
  const int64_t taps_h = f.dim() == 2 ? f.size(0) : taps_w;
  const int64_t out_w = upfirdn_out_length(x.size(3), up[0], down[0], padding[0], padding[1], taps_w);
  const int64_t out_h = upfirdn_out_length(x.size(2), up[1], down[1], padding[2], padding[3], taps_h);
  TORCH_CHECK_VALUE(out_w >= 1 && out_h >= 1, op, ": the output would be empty: W * up_x + pad_x0 + pad_x1 = ",
                    x.size(3) * up[0] + padding[0] + padding[1], " and H * up_y + pad_y0 + pad_y1 = ",
                    x.size(2) * up[1] + padding[2] + padding[3], " must be at least the filter's ", taps_w, " x ",
                    taps_h, " (w x h) taps");

  at::Tensor out = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(upfirdn2d_out_format(x)));
  if (out.numel() == 0) return out;
  UpFirDn2dProblem problem{x.size(0), x.size(1),
                           UpFirDnAxis{x.size(3), out_w, up[0], down[0], padding[0], taps_w},
                           UpFirDnAxis{x.size(2), out_h, up[1], down[1], padding[2], taps_h},
                           {},
                           {}};
  for (int d = 0; d < 4; ++d) {
    problem.in_strides[d] = x.stride(d);
    problem.out_strides[d] = out.stride(d);
  }
  run(x, upfirdn2d_taps(f, flip_filter, gain, x.scalar_type()), out, problem);
  return out;
}

}  // namespace medkern
