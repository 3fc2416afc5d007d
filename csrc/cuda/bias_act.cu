// CUDA kernels of medkern::bias_act and medkern::bias_act_backward: indexing and launch only.
// The math is csrc/common/bias_act.h, the same functions the CPU kernels run. Elements are
// walked in memory order ([outer, channels, inner], csrc/common/layout.h), so every layout is
// coalesced. The bias gradient is a sum over the gradient, left to ATen's reduction.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/bias_act_op.h"

namespace medkern {
namespace {

constexpr int kThreads = 256;

// Order 0 writes the forward; 1 and 2 the gradient of that order (g is unused for order 0).
template <Act A, int Order, typename scalar_t>
__global__ void bias_act_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ b, scalar_t* __restrict__ out, int64_t n,
                                int64_t channels, int64_t inner, BiasActParams<at::opmath_type<scalar_t>> p) {
  using U = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const U z = static_cast<U>(x[i]) + (b ? static_cast<U>(b[(i / inner) % channels]) : U(0));
    if constexpr (Order == 0) {
      out[i] = static_cast<scalar_t>(bias_act_forward<A>(z, p));
    } else {
      out[i] = static_cast<scalar_t>(bias_act_grad<A, Order>(static_cast<U>(g[i]), z, p));
    }
  }
}

template <int Order>
void launch(const at::Tensor* g, const at::Tensor& x, const std::optional<at::Tensor>& b, at::Tensor& out,
            const ChannelLayout& l, const BiasActArgs& args) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.numel();
  const int64_t blocks_needed = (n + kThreads - 1) / kThreads;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(blocks_needed, int64_t(sms) * 32));
  const auto stream = at::cuda::getCurrentCUDAStream();
  const at::Tensor bc = b.has_value() ? b->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "medkern::bias_act_cuda", [&] {
    dispatch_act(args.act, [&](auto a) {
      bias_act_kernel<decltype(a)::value, Order, scalar_t><<<blocks, kThreads, 0, stream>>>(
          g ? g->const_data_ptr<scalar_t>() : nullptr, x.const_data_ptr<scalar_t>(),
          b.has_value() ? bc.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(), n, l.channels,
          l.inner, args.params<at::opmath_type<scalar_t>>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

at::Tensor bias_act_cuda(const at::Tensor& x, const std::optional<at::Tensor>& b, int64_t dim, c10::string_view act,
                         double alpha, double gain, std::optional<double> clamp) {
  return bias_act_op(x, b, dim, act, alpha, gain, clamp,
                     [&](const at::Tensor& xd, at::Tensor& y, const ChannelLayout& l, const BiasActArgs& args) {
                       launch<0>(nullptr, xd, b, y, l, args);
                     });
}

std::tuple<at::Tensor, at::Tensor> bias_act_backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                          const std::optional<at::Tensor>& b, int64_t dim,
                                                          c10::string_view act, double alpha, double gain,
                                                          std::optional<double> clamp, int64_t order, bool bias_grad) {
  return bias_act_backward_op(
      grad, x, b, dim, act, alpha, gain, clamp, order, bias_grad,
      [&](const at::Tensor& gd, const at::Tensor& xd, at::Tensor& gx, at::Tensor& gb, const ChannelLayout& l,
          const BiasActArgs& args, int64_t ord) {
        if (ord == 1) {
          launch<1>(&gd, xd, b, gx, l, args);
        } else {
          launch<2>(&gd, xd, b, gx, l, args);
        }
        if (gb.numel() > 0) {
          // gx is dense in memory order, whatever its logical layout
          const auto sums = gx.as_strided({l.outer, l.channels, l.inner}, {l.channels * l.inner, l.inner, 1})
                                .sum({0, 2}, /*keepdim=*/false, at::toOpMathType(gx.scalar_type()));
          gb.copy_(sums);
        }
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CUDA, m) {
  m.impl("bias_act", &bias_act_cuda);
  m.impl("bias_act_backward", &bias_act_backward_cuda);
}

}  // namespace medkern
