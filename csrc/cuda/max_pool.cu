// CUDA kernels of medkern::max_pool and medkern::max_pool_backward: indexing and launch only.
// The math is csrc/common/max_pool.h, the same functions the CPU kernels run. The forward takes
// one output element per thread, the backward one input element (it gathers the gradients of
// the outputs whose argmax names it, so no two threads write one element). Threads follow
// memory order, so loads and stores of neighbouring threads are neighbours in either layout.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/max_pool_op.h"

namespace medkern {
namespace {

constexpr int kThreads = 256;

// (n, c, i[0..2]) of element e (memory order) of a tensor of spatial size `size`.
__device__ inline void unravel(const MaxPoolShape& s, const int64_t* size, int64_t e, int64_t* n, int64_t* c,
                               int64_t* i) {
  if (s.channels_last) {
    *c = e % s.c;
    e /= s.c;
  }
  i[2] = e % size[2];
  e /= size[2];
  i[1] = e % size[1];
  e /= size[1];
  i[0] = e % size[0];
  e /= size[0];
  if (!s.channels_last) {
    *c = e % s.c;
    e /= s.c;
  }
  *n = e;
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                               uint8_t* __restrict__ argmax, MaxPoolShape s, int64_t total) {
  using U = at::opmath_type<scalar_t>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    int64_t n, c, o[3];
    unravel(s, s.out, e, &n, &c, o);
    U value;
    max_pool_window(x, s, n, c, o, &value, &argmax[e]);
    y[e] = static_cast<scalar_t>(value);
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad, const uint8_t* __restrict__ argmax,
                                scalar_t* __restrict__ dx, MaxPoolShape s, int64_t total) {
  using U = at::opmath_type<scalar_t>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    int64_t n, c, i[3];
    unravel(s, s.in, e, &n, &c, i);
    dx[e] = static_cast<scalar_t>(max_pool_grad<scalar_t, U>(grad, argmax, s, n, c, i));
  }
}

unsigned blocks_for(int64_t total) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(sms) * 32));
}

std::tuple<at::Tensor, at::Tensor> max_pool_cuda(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                                 at::IntArrayRef dilation, bool ceil_mode) {
  return max_pool_op(
      x, kernel_size, stride, padding, dilation, ceil_mode,
      [&](const at::Tensor& xd, at::Tensor& y, at::Tensor& argmax, const MaxPoolShape& s) {
        const c10::cuda::CUDAGuard guard(xd.device());
        const auto stream = at::cuda::getCurrentCUDAStream();
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xd.scalar_type(), "medkern::max_pool_cuda", [&] {
          forward_kernel<scalar_t><<<blocks_for(y.numel()), kThreads, 0, stream>>>(
              xd.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), argmax.mutable_data_ptr<uint8_t>(), s,
              y.numel());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
}

at::Tensor max_pool_backward_cuda(const at::Tensor& grad, const at::Tensor& argmax, at::IntArrayRef input_size,
                                  at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation) {
  return max_pool_backward_op(
      grad, argmax, input_size, kernel_size, stride, padding, dilation,
      [&](const at::Tensor& g, const at::Tensor& a, at::Tensor& dx, const MaxPoolShape& s) {
        const c10::cuda::CUDAGuard guard(g.device());
        const auto stream = at::cuda::getCurrentCUDAStream();
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "medkern::max_pool_backward_cuda",
                                        [&] {
                                          backward_kernel<scalar_t><<<blocks_for(dx.numel()), kThreads, 0, stream>>>(
                                              g.const_data_ptr<scalar_t>(), a.const_data_ptr<uint8_t>(),
                                              dx.mutable_data_ptr<scalar_t>(), s, dx.numel());
                                          C10_CUDA_KERNEL_LAUNCH_CHECK();
                                        });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CUDA, m) {
  m.impl("max_pool", &max_pool_cuda);
  m.impl("max_pool_backward", &max_pool_backward_cuda);
}

}  // namespace medkern
