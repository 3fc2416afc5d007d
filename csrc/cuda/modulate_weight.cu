// CUDA kernels of medkern::modulate_weight and medkern::modulate_weight_backward: indexing and
// launch only. The math is csrc/common/modulate_weight.h, the same functions the CPU kernels run.
//   rows      a block per row (n, o): the row's sum of u^2 (and of g * u) with a fixed block
//             reduction, then d; the forward writes the row, the backward stores d and dot.
//   gW        a thread per element (o, r) of weight: sum over n in order.
//   gs        a thread per (n, i): sum over o, then k, in order.
// All tensors are contiguous (csrc/common/modulate_weight_op.h); sums in the op-math type.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/modulate_weight_op.h"
#include "block_reduce.cuh"

namespace medkern {
namespace {

// Forward (out != nullptr): writes row (n, o) of the output. Backward: stores d and dot of the row.
template <typename scalar_t>
__global__ void rows_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ weight,
                            const scalar_t* __restrict__ styles, scalar_t* __restrict__ out,
                            at::opmath_type<scalar_t>* __restrict__ d_out,
                            at::opmath_type<scalar_t>* __restrict__ dot_out,
                            ModulateWeightShape s, bool demodulate, at::opmath_type<scalar_t> eps) {
  using U = at::opmath_type<scalar_t>;
  __shared__ U shared[kWarps];
  const int64_t row = blockIdx.x, n = row / s.o, o = row % s.o, r = s.row();
  const scalar_t* w = weight + o * r;
  const scalar_t* sn = styles + n * s.i;
  U sum_sq(0), dot(0);
  for (int64_t j = threadIdx.x; j < r; j += kThreads) {
    const U u = static_cast<U>(w[j]) * static_cast<U>(sn[j / s.k]);
    sum_sq += u * u;
    if (grad != nullptr) dot += static_cast<U>(grad[row * r + j]) * u;
  }
  const U d = modulate_weight_coefficient(block_sum(sum_sq, shared), eps, demodulate);
  if (out == nullptr) {
    const U total_dot = block_sum(dot, shared);
    if (threadIdx.x == 0) d_out[row] = d, dot_out[row] = total_dot;
    return;
  }
  for (int64_t j = threadIdx.x; j < r; j += kThreads) {
    const U u = static_cast<U>(w[j]) * static_cast<U>(sn[j / s.k]);
    out[row * r + j] = static_cast<scalar_t>(modulate_weight_forward(u, d));
  }
}

template <typename scalar_t>
__device__ at::opmath_type<scalar_t> du_at(const scalar_t* grad, const scalar_t* weight, const scalar_t* styles,
                                           const at::opmath_type<scalar_t>* d, const at::opmath_type<scalar_t>* dot,
                                           const ModulateWeightShape& s, bool demodulate, int64_t n, int64_t o,
                                           int64_t j) {
  using U = at::opmath_type<scalar_t>;
  const int64_t r = s.row(), row = n * s.o + o;
  const U g = static_cast<U>(grad[row * r + j]);
  if (!demodulate) return g;
  const U u = static_cast<U>(weight[o * r + j]) * static_cast<U>(styles[n * s.i + j / s.k]);
  return modulate_weight_du(g, u, d[row], dot[row], true);
}

template <typename scalar_t>
__global__ void grad_weight_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ weight,
                                   const scalar_t* __restrict__ styles,
                                   const at::opmath_type<scalar_t>* __restrict__ d,
                                   const at::opmath_type<scalar_t>* __restrict__ dot,
                                   scalar_t* __restrict__ grad_weight, ModulateWeightShape s, bool demodulate) {
  using U = at::opmath_type<scalar_t>;
  const int64_t r = s.row(), total = s.o * r;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = e / r, j = e % r;
    U acc(0);
    for (int64_t n = 0; n < s.n; ++n) {
      const U style = static_cast<U>(styles[n * s.i + j / s.k]);
      acc += du_at(grad, weight, styles, d, dot, s, demodulate, n, o, j) * style;
    }
    grad_weight[e] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void grad_styles_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ weight,
                                   const scalar_t* __restrict__ styles,
                                   const at::opmath_type<scalar_t>* __restrict__ d,
                                   const at::opmath_type<scalar_t>* __restrict__ dot,
                                   scalar_t* __restrict__ grad_styles, ModulateWeightShape s, bool demodulate) {
  using U = at::opmath_type<scalar_t>;
  const int64_t total = s.n * s.i, r = s.row();
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = e / s.i, i = e % s.i;
    U acc(0);
    for (int64_t o = 0; o < s.o; ++o) {
      U sum(0);
      for (int64_t k = 0; k < s.k; ++k) {
        const int64_t j = i * s.k + k;
        sum += du_at(grad, weight, styles, d, dot, s, demodulate, n, o, j) * static_cast<U>(weight[o * r + j]);
      }
      acc += sum;
    }
    grad_styles[e] = static_cast<scalar_t>(acc);
  }
}

// Blocks for a grid-stride loop over `elements`.
unsigned element_blocks(int64_t elements) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t needed = (elements + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(needed, int64_t(sms) * 32)));
}

at::Tensor modulate_weight_cuda(const at::Tensor& weight, const at::Tensor& styles, bool demodulate, double eps) {
  return modulate_weight_op(
      weight, styles, demodulate, eps,
      [&](const at::Tensor& w, const at::Tensor& st, at::Tensor& out, const ModulateWeightShape& s, bool demod,
          double e) {
        const c10::cuda::CUDAGuard guard(w.device());
        const auto stream = at::cuda::getCurrentCUDAStream();
        const auto dtype = w.scalar_type();
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::modulate_weight_cuda", [&] {
          using U = at::opmath_type<scalar_t>;
          rows_kernel<scalar_t><<<static_cast<unsigned>(s.n * s.o), kThreads, 0, stream>>>(
              nullptr, w.const_data_ptr<scalar_t>(), st.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
              nullptr, nullptr, s, demod, static_cast<U>(e));
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
}

std::tuple<at::Tensor, at::Tensor> modulate_weight_backward_cuda(const at::Tensor& grad, const at::Tensor& weight,
                                                                 const at::Tensor& styles, bool demodulate,
                                                                 double eps) {
  return modulate_weight_backward_op(
      grad, weight, styles, demodulate, eps,
      [&](const at::Tensor& g, const at::Tensor& w, const at::Tensor& st, at::Tensor& gw, at::Tensor& gs,
          const ModulateWeightShape& s, bool demod, double e) {
        const c10::cuda::CUDAGuard guard(w.device());
        const auto stream = at::cuda::getCurrentCUDAStream();
        const auto opmath = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
        at::Tensor d = at::empty({s.n * s.o}, w.options().dtype(opmath));
        at::Tensor dot = at::empty_like(d);
        const auto dtype = w.scalar_type();
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::modulate_weight_backward_cuda", [&] {
          using U = at::opmath_type<scalar_t>;
          const scalar_t* gp = g.const_data_ptr<scalar_t>();
          const scalar_t* wp = w.const_data_ptr<scalar_t>();
          const scalar_t* sp = st.const_data_ptr<scalar_t>();
          if (demod) {
            rows_kernel<scalar_t><<<static_cast<unsigned>(s.n * s.o), kThreads, 0, stream>>>(
                gp, wp, sp, nullptr, d.mutable_data_ptr<U>(), dot.mutable_data_ptr<U>(), s, true, static_cast<U>(e));
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
          grad_weight_kernel<scalar_t><<<element_blocks(s.o * s.row()), kThreads, 0, stream>>>(
              gp, wp, sp, d.const_data_ptr<U>(), dot.const_data_ptr<U>(), gw.mutable_data_ptr<scalar_t>(), s, demod);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          grad_styles_kernel<scalar_t><<<element_blocks(s.n * s.i), kThreads, 0, stream>>>(
              gp, wp, sp, d.const_data_ptr<U>(), dot.const_data_ptr<U>(), gs.mutable_data_ptr<scalar_t>(), s, demod);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CUDA, m) {
  m.impl("modulate_weight", &modulate_weight_cuda);
  m.impl("modulate_weight_backward", &modulate_weight_backward_cuda);
}

}  // namespace medkern
