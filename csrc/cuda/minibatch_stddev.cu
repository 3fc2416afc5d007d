// CUDA kernels of medkern::minibatch_stddev and medkern::minibatch_stddev_backward: indexing and
// launch only. The math is csrc/common/minibatch_stddev.h, the same functions the CPU kernels
// run. A thread takes one (group m, channel k, pixel) item and its G members. The forward writes
// each item's s; the per-statistic averages, and the backward's per-statistic sums of grad, are
// left to ATen's (deterministic) reductions.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/minibatch_stddev_op.h"

namespace medkern {
namespace {

constexpr int kThreads = 256;

// Item q = (m * C + k) * HW + p.
struct Item {
  int64_t m, k, p;
};

__device__ inline Item item_of(int64_t q, const MinibatchStddevShape& s) {
  return {q / (s.c * s.hw), (q / s.hw) % s.c, q % s.hw};
}

// s of every item, into stddev (M, C, H * W) in the op-math type.
template <typename scalar_t>
__global__ void stddev_kernel(const scalar_t* __restrict__ x, at::opmath_type<scalar_t>* __restrict__ stddev,
                              MinibatchStddevShape s) {
  using U = at::opmath_type<scalar_t>;
  const int64_t items = s.groups * s.c * s.hw;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < items; q += stride) {
    const Item it = item_of(q, s);
    U mean, sd;
    minibatch_stddev_moments<U>(x + it.m * s.x_sn + it.k * s.x_sc + it.p * s.x_shw, s.groups * s.x_sn, s.group, mean,
                                sd);
    stddev[q] = sd;
  }
}

// gx of the G members of every item; a (M, F) as in minibatch_stddev.h.
template <typename scalar_t>
__global__ void grad_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                            const at::opmath_type<scalar_t>* __restrict__ a, scalar_t* __restrict__ gx,
                            MinibatchStddevShape s) {
  using U = at::opmath_type<scalar_t>;
  const int64_t items = s.groups * s.c * s.hw;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t x_member = s.groups * s.x_sn, o_member = s.groups * s.o_sn;
  for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < items; q += stride) {
    const Item it = item_of(q, s);
    const int64_t xo = it.m * s.x_sn + it.k * s.x_sc + it.p * s.x_shw;
    const int64_t go = it.m * s.o_sn + it.k * s.o_sc + it.p * s.o_shw;
    U mean, sd;
    minibatch_stddev_moments<U>(x + xo, x_member, s.group, mean, sd);
    const U coef = a[it.m * s.num_channels + it.k / s.channels_per_stat()];
    for (int64_t g = 0; g < s.group; ++g) {
      gx[xo + g * x_member] = static_cast<scalar_t>(minibatch_stddev_grad(
          static_cast<U>(grad[go + g * o_member]), static_cast<U>(x[xo + g * x_member]), mean, sd, coef, s.group));
    }
  }
}

unsigned blocks_for(int64_t items) {
  const int64_t needed = (items + kThreads - 1) / kThreads;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(needed, int64_t(sms) * 32)));
}

at::Tensor minibatch_stddev_cuda(const at::Tensor& x, int64_t group_size, int64_t num_channels) {
  return minibatch_stddev_op(x, group_size, num_channels,
                             [&](const at::Tensor& xd, at::Tensor& out, const MinibatchStddevShape& s) {
    const c10::cuda::CUDAGuard guard(x.device());
    const auto acc = at::toOpMathType(x.scalar_type());
    at::Tensor stddev = at::empty({s.groups, s.num_channels, s.channels_per_stat() * s.hw}, x.options().dtype(acc));
    const auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "medkern::minibatch_stddev_cuda", [&] {
      stddev_kernel<scalar_t><<<blocks_for(s.groups * s.c * s.hw), kThreads, 0, stream>>>(
          xd.const_data_ptr<scalar_t>(), stddev.mutable_data_ptr<at::opmath_type<scalar_t>>(), s);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    const at::Tensor stat = stddev.mean({2}).to(x.scalar_type());  // (M, F)
    out.narrow(1, s.c, s.num_channels)
        .copy_(stat.repeat({s.group, 1}).view({s.n, s.num_channels, 1, 1}).expand({s.n, s.num_channels, x.size(2),
                                                                                    x.size(3)}));
  });
}

at::Tensor minibatch_stddev_backward_cuda(const at::Tensor& grad, const at::Tensor& x, int64_t group_size,
                                          int64_t num_channels) {
  return minibatch_stddev_backward_op(
      grad, x, group_size, num_channels,
      [&](const at::Tensor& gd, const at::Tensor& xd, at::Tensor& gx, const MinibatchStddevShape& s) {
        const c10::cuda::CUDAGuard guard(x.device());
        const auto acc = at::toOpMathType(x.scalar_type());
        const at::Tensor a = gd.narrow(1, s.c, s.num_channels)
                                 .reshape({s.group, s.groups, s.num_channels, s.hw})
                                 .sum({0, 3}, /*keepdim=*/false, acc)
                                 .div_(static_cast<double>(s.channels_per_stat() * s.hw))
                                 .contiguous();
        const auto stream = at::cuda::getCurrentCUDAStream();
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                        "medkern::minibatch_stddev_backward_cuda", [&] {
          grad_kernel<scalar_t><<<blocks_for(s.groups * s.c * s.hw), kThreads, 0, stream>>>(
              gd.const_data_ptr<scalar_t>(), xd.const_data_ptr<scalar_t>(),
              a.const_data_ptr<at::opmath_type<scalar_t>>(), gx.mutable_data_ptr<scalar_t>(), s);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CUDA, m) {
  m.impl("minibatch_stddev", &minibatch_stddev_cuda);
  m.impl("minibatch_stddev_backward", &minibatch_stddev_backward_cuda);
}

}  // namespace medkern
