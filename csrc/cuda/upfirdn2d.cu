// CUDA kernel of medkern::upfirdn2d: indexing and launch only; the math is
// csrc/common/upfirdn2d.h, the same functions the CPU kernel runs. One thread per output,
// walked in the output's memory order (NCHW or channels_last) so stores coalesce; inputs are
// read through their strides, zero outside the input.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/upfirdn2d_op.h"

namespace medkern {
namespace {

constexpr int kThreads = 256;

template <typename T, bool ChannelsLast>
__global__ void upfirdn2d_kernel(const T* __restrict__ x, const at::opmath_type<T>* __restrict__ taps,
                                 T* __restrict__ out, UpFirDn2dProblem p) {
  using U = at::opmath_type<T>;
  const int64_t total = p.batch * p.channels * p.y.out * p.x.out;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    int64_t n, c, oy, ox, rest = i;
    if constexpr (ChannelsLast) {
      c = rest % p.channels, rest /= p.channels;
      ox = rest % p.x.out, rest /= p.x.out;
      oy = rest % p.y.out, n = rest / p.y.out;
    } else {
      ox = rest % p.x.out, rest /= p.x.out;
      oy = rest % p.y.out, rest /= p.y.out;
      c = rest % p.channels, n = rest / p.channels;
    }
    const TapRun ry = tap_run(p.y, oy), rx = tap_run(p.x, ox);
    const T* plane = x + n * p.in_strides[0] + c * p.in_strides[1];
    const U v = tap_sum(taps, p.x.taps, ry, p.y.up, rx, p.x.up, [&](int64_t a, int64_t b) {
      const int64_t iy = ry.i0 + a, ix = rx.i0 + b;
      const bool inside = iy >= 0 && iy < p.y.in && ix >= 0 && ix < p.x.in;
      return inside ? static_cast<U>(plane[iy * p.in_strides[2] + ix * p.in_strides[3]]) : U(0);
    });
    out[n * p.out_strides[0] + c * p.out_strides[1] + oy * p.out_strides[2] + ox * p.out_strides[3]] =
        static_cast<T>(v);
  }
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, at::IntArrayRef up, at::IntArrayRef down,
                          at::IntArrayRef padding, bool flip_filter, double gain) {
  return upfirdn2d_op(
      x, f, up, down, padding, flip_filter, gain,
      [&](const at::Tensor& xd, const at::Tensor& taps, at::Tensor& out, const UpFirDn2dProblem& p) {
        const c10::cuda::CUDAGuard guard(x.device());
        const int64_t blocks_needed = (out.numel() + kThreads - 1) / kThreads;
        const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
        const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(blocks_needed, int64_t(sms) * 32));
        const auto stream = at::cuda::getCurrentCUDAStream();
        const bool channels_last = out.is_contiguous(at::MemoryFormat::ChannelsLast) && !out.is_contiguous();
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "medkern::upfirdn2d_cuda", [&] {
          using U = at::opmath_type<scalar_t>;
          const auto kernel = channels_last ? upfirdn2d_kernel<scalar_t, true> : upfirdn2d_kernel<scalar_t, false>;
          kernel<<<blocks, kThreads, 0, stream>>>(xd.const_data_ptr<scalar_t>(), taps.const_data_ptr<U>(),
                                                  out.mutable_data_ptr<scalar_t>(), p);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CUDA, m) { m.impl("upfirdn2d", &upfirdn2d_cuda); }

}  // namespace medkern
