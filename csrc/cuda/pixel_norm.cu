// CUDA kernels of medkern::pixel_norm and medkern::pixel_norm_backward: indexing and launch only.
// The math is csrc/common/pixel_norm.h, the same functions the CPU kernels run. A thread takes
// one position (an index of every dim but dim) of x seen in memory order as [outer, channels,
// inner] and sums over the channels in order; neighbouring threads read neighbouring inner
// indices, so NCHW-like layouts are coalesced.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/pixel_norm_op.h"

namespace medkern {
namespace {

constexpr int kThreads = 256;

template <bool Backward, typename scalar_t>
__global__ void pixel_norm_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                  scalar_t* __restrict__ out, ChannelLayout l, at::opmath_type<scalar_t> eps) {
  using U = at::opmath_type<scalar_t>;
  const int64_t positions = l.outer * l.inner;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < positions; p += stride) {
    const int64_t base = pixel_norm_offset(l, p, 0);
    U sum_sq(0), dot(0);
    for (int64_t c = 0; c < l.channels; ++c) {
      const U v = static_cast<U>(x[base + c * l.inner]);
      sum_sq += v * v;
      if constexpr (Backward) dot += static_cast<U>(g[base + c * l.inner]) * v;
    }
    const U r = pixel_norm_scale(sum_sq, l.channels, eps);
    for (int64_t c = 0; c < l.channels; ++c) {
      const int64_t i = base + c * l.inner;
      if constexpr (Backward) {
        out[i] = static_cast<scalar_t>(pixel_norm_grad(static_cast<U>(g[i]), static_cast<U>(x[i]), r, dot, l.channels));
      } else {
        out[i] = static_cast<scalar_t>(pixel_norm_forward(static_cast<U>(x[i]), r));
      }
    }
  }
}

template <bool Backward>
void launch(const at::Tensor* g, const at::Tensor& x, at::Tensor& out, const ChannelLayout& l, double eps) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t positions = l.outer * l.inner;
  const int64_t blocks_needed = (positions + kThreads - 1) / kThreads;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(blocks_needed, int64_t(sms) * 32));
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "medkern::pixel_norm_cuda", [&] {
    using U = at::opmath_type<scalar_t>;
    pixel_norm_kernel<Backward, scalar_t><<<blocks, kThreads, 0, stream>>>(
        g ? g->const_data_ptr<scalar_t>() : nullptr, x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
        l, static_cast<U>(eps));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor pixel_norm_cuda(const at::Tensor& x, int64_t dim, double eps) {
  return pixel_norm_op(x, dim, eps, [&](const at::Tensor& xd, at::Tensor& y, const ChannelLayout& l, double e) {
    launch<false>(nullptr, xd, y, l, e);
  });
}

at::Tensor pixel_norm_backward_cuda(const at::Tensor& grad, const at::Tensor& x, int64_t dim, double eps) {
  return pixel_norm_backward_op(
      grad, x, dim, eps,
      [&](const at::Tensor& gd, const at::Tensor& xd, at::Tensor& gx, const ChannelLayout& l, double e) {
        launch<true>(&gd, xd, gx, l, e);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CUDA, m) {
  m.impl("pixel_norm", &pixel_norm_cuda);
  m.impl("pixel_norm_backward", &pixel_norm_backward_cuda);
}

}  // namespace medkern
