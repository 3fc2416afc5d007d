// CUDA kernels of medkern::norm_act (csrc/common/norm_act_kernels.h): indexing and launch only.
// The math is csrc/common/norm_act.h and norm_act_tables.h, as on the CPU; the host part is
// csrc/norm_act_op.cpp.
//
// Reductions run one thread block per segment (the same split as the CPU kernels, so each
// partial sum covers the same elements): planar, the block sums one contiguous run; interleaved,
// each warp walks every kWarps-th row and its lanes take 32 consecutive channels (coalesced),
// then the warps' partials are added in shared memory in a fixed order.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../norm_act_op.h"
#include "block_reduce.cuh"

namespace medkern {
namespace {

// Adds each warp's per-lane value into lane's slot: the sum over the block's warps for channel
// c0 + lane, valid in warp 0 (interleaved reductions).
template <typename U>
__device__ U warps_sum(U v, U* shared) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  shared[warp * 32 + lane] = v;
  __syncthreads();
  U total = U(0);
  for (int w = 0; w < kWarps; ++w) total += shared[w * 32 + lane];
  return total;
}

// Calls f(offset, table_index) for each element of segment `task` that this thread takes, in
// the planar layout (a run of one (n, c)).
template <typename F>
__device__ void planar_segment(const NormShape& sh, int64_t task, F&& f) {
  const int64_t k_count = sh.segments();
  const int64_t plane = task / k_count, begin = (task % k_count) * sh.segment;
  const int64_t end = std::min(sh.s, begin + sh.segment);
  for (int64_t p = begin + threadIdx.x; p < end; p += kThreads) f(plane * sh.s + p);
}

// Likewise in the interleaved layout, for channel c of sample n's rows in segment k.
template <typename F>
__device__ void interleaved_rows(const NormShape& sh, int64_t n, int64_t k, int64_t c, F&& f) {
  const int64_t row_end = std::min(sh.s, (k + 1) * sh.segment);
  for (int64_t r = k * sh.segment + threadIdx.x / 32; r < row_end; r += kWarps) f((n * sh.s + r) * sh.c + c);
}

__device__ inline int64_t segment_length(const NormShape& sh, int64_t k) {
  return std::min(sh.segment, sh.s - k * sh.segment);
}

template <typename scalar_t, bool Rows>
__global__ void moments_kernel(const scalar_t* __restrict__ x, NormShape sh, at::opmath_type<scalar_t>* mean_out,
                               at::opmath_type<scalar_t>* m2_out) {
  using U = at::opmath_type<scalar_t>;
  __shared__ U shared[kThreads];
  const int64_t task = blockIdx.x, k_count = sh.segments();
  const U count = static_cast<U>(segment_length(sh, task % k_count));
  if constexpr (!Rows) {
    U sum(0), m2(0);
    planar_segment(sh, task, [&](int64_t i) { sum += static_cast<U>(x[i]); });
    const U mean = block_sum(sum, shared) / count;
    planar_segment(sh, task, [&](int64_t i) {
      const U d = static_cast<U>(x[i]) - mean;
      m2 += d * d;
    });
    m2 = block_sum(m2, shared);
    if (threadIdx.x == 0) {
      mean_out[task] = mean;
      m2_out[task] = m2;
    }
  } else {
    const int64_t n = task / k_count, k = task % k_count;
    for (int64_t c0 = 0; c0 < sh.c; c0 += 32) {
      const int64_t c = c0 + threadIdx.x % 32;
      U sum(0), m2(0);
      if (c < sh.c) interleaved_rows(sh, n, k, c, [&](int64_t i) { sum += static_cast<U>(x[i]); });
      const U mean = warps_sum(sum, shared) / count;
      if (c < sh.c) {
        interleaved_rows(sh, n, k, c, [&](int64_t i) {
          const U d = static_cast<U>(x[i]) - mean;
          m2 += d * d;
        });
      }
      m2 = warps_sum(m2, shared);
      if (threadIdx.x < 32 && c < sh.c) {
        mean_out[(n * sh.c + c) * k_count + k] = mean;
        m2_out[(n * sh.c + c) * k_count + k] = m2;
      }
    }
  }
}

// The [N * C] table index of element i.
__device__ inline int64_t table_index(const NormShape& sh, int64_t i) {
  return sh.interleaved ? (i / (sh.s * sh.c)) * sh.c + i % sh.c : i / sh.s;
}

template <Act A, typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ scale,
                               const at::opmath_type<scalar_t>* __restrict__ shift, at::opmath_type<scalar_t> alpha,
                               NormShape sh, int64_t numel, scalar_t* __restrict__ y) {
  using U = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const int64_t t = table_index(sh, i);
    y[i] = static_cast<scalar_t>(norm_act_forward<A>(static_cast<U>(x[i]), scale[t], shift[t], alpha));
  }
}

template <Act A, bool FromOutput, typename U, typename scalar_t>
__device__ void terms(const scalar_t* g, const scalar_t* s, const NormGradTables<U>& tb, U alpha, int64_t i,
                      int64_t t, U& dpre, U& xhat) {
  norm_act_grad_terms<A, FromOutput>(static_cast<U>(g[i]), static_cast<U>(s[i]), tb.xs[t], tb.xo[t], tb.scale[t],
                                     tb.shift[t], alpha, dpre, xhat);
}

template <Act A, bool FromOutput, typename scalar_t, bool Rows>
__global__ void grad_sums_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ s,
                                 NormGradTables<at::opmath_type<scalar_t>> tb, at::opmath_type<scalar_t> alpha,
                                 NormShape sh, at::opmath_type<scalar_t>* sum_dpre,
                                 at::opmath_type<scalar_t>* sum_dpre_xhat) {
  using U = at::opmath_type<scalar_t>;
  __shared__ U shared[kThreads];
  const int64_t task = blockIdx.x, k_count = sh.segments();
  if constexpr (!Rows) {
    U a(0), b(0);
    planar_segment(sh, task, [&](int64_t i) {
      U dpre, xhat;
      terms<A, FromOutput>(g, s, tb, alpha, i, task / k_count, dpre, xhat);
      a += dpre;
      b += dpre * xhat;
    });
    a = block_sum(a, shared);
    b = block_sum(b, shared);
    if (threadIdx.x == 0) {
      sum_dpre[task] = a;
      sum_dpre_xhat[task] = b;
    }
  } else {
    const int64_t n = task / k_count, k = task % k_count;
    for (int64_t c0 = 0; c0 < sh.c; c0 += 32) {
      const int64_t c = c0 + threadIdx.x % 32;
      U a(0), b(0);
      if (c < sh.c) {
        interleaved_rows(sh, n, k, c, [&](int64_t i) {
          U dpre, xhat;
          terms<A, FromOutput>(g, s, tb, alpha, i, n * sh.c + c, dpre, xhat);
          a += dpre;
          b += dpre * xhat;
        });
      }
      a = warps_sum(a, shared);
      b = warps_sum(b, shared);
      if (threadIdx.x < 32 && c < sh.c) {
        sum_dpre[(n * sh.c + c) * k_count + k] = a;
        sum_dpre_xhat[(n * sh.c + c) * k_count + k] = b;
      }
    }
  }
}

template <Act A, bool FromOutput, typename scalar_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ s,
                                  NormGradTables<at::opmath_type<scalar_t>> tb, at::opmath_type<scalar_t> alpha,
                                  NormShape sh, int64_t numel, scalar_t* __restrict__ dx) {
  using U = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const int64_t t = table_index(sh, i);
    U dpre, xhat;
    terms<A, FromOutput>(g, s, tb, alpha, i, t, dpre, xhat);
    dx[i] = static_cast<scalar_t>(norm_act_grad_input(dpre, xhat, tb.k1[t], tb.k2[t], tb.k3[t]));
  }
}

// Launch geometry: one block per segment task for reductions; a grid-stride grid otherwise.
unsigned reduction_blocks(const NormShape& sh) {
  return static_cast<unsigned>((sh.interleaved ? sh.n : sh.n * sh.c) * sh.segments());
}

unsigned elementwise_blocks(int64_t numel) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<unsigned>(std::min<int64_t>((numel + kThreads - 1) / kThreads, int64_t(sms) * 32));
}

int64_t numel_of(const NormShape& sh) { return sh.n * sh.c * sh.s; }

void moments(at::ScalarType dtype, const void* x, const NormShape& sh, void* mean, void* m2) {
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::norm_act_cuda", [&] {
    using U = at::opmath_type<scalar_t>;
    auto* xp = static_cast<const scalar_t*>(x);
    if (sh.interleaved) {
      moments_kernel<scalar_t, true><<<reduction_blocks(sh), kThreads, 0, stream>>>(xp, sh, static_cast<U*>(mean), static_cast<U*>(m2));
    } else {
      moments_kernel<scalar_t, false><<<reduction_blocks(sh), kThreads, 0, stream>>>(xp, sh, static_cast<U*>(mean), static_cast<U*>(m2));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void forward(at::ScalarType dtype, Act act, double alpha, const void* x, const void* scale, const void* shift,
             const NormShape& sh, void* y) {
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::norm_act_cuda", [&] {
    using U = at::opmath_type<scalar_t>;
    dispatch_act(act, [&](auto a) {
      forward_kernel<decltype(a)::value, scalar_t><<<elementwise_blocks(numel_of(sh)), kThreads, 0, stream>>>(
          static_cast<const scalar_t*>(x), static_cast<const U*>(scale), static_cast<const U*>(shift),
          static_cast<U>(alpha), sh, numel_of(sh), static_cast<scalar_t*>(y));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void grad_sums(at::ScalarType dtype, Act act, double alpha, bool from_output, const void* g, const void* saved,
               const NormGradTables<void>& tables, const NormShape& sh, void* sum_dpre, void* sum_dpre_xhat) {
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::norm_act_backward_cuda", [&] {
    using U = at::opmath_type<scalar_t>;
    const auto tb = typed<U>(tables);
    const auto* gp = static_cast<const scalar_t*>(g);
    const auto* sp = static_cast<const scalar_t*>(saved);
    auto *s1 = static_cast<U*>(sum_dpre), *s2 = static_cast<U*>(sum_dpre_xhat);
    dispatch_norm_grad(act, from_output, [&]<Act A, bool FromOutput>() {
      if (sh.interleaved) {
        grad_sums_kernel<A, FromOutput, scalar_t, true>
            <<<reduction_blocks(sh), kThreads, 0, stream>>>(gp, sp, tb, static_cast<U>(alpha), sh, s1, s2);
      } else {
        grad_sums_kernel<A, FromOutput, scalar_t, false>
            <<<reduction_blocks(sh), kThreads, 0, stream>>>(gp, sp, tb, static_cast<U>(alpha), sh, s1, s2);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void grad_input(at::ScalarType dtype, Act act, double alpha, bool from_output, const void* g, const void* saved,
                const NormGradTables<void>& tables, const NormShape& sh, void* dx) {
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::norm_act_backward_cuda", [&] {
    using U = at::opmath_type<scalar_t>;
    dispatch_norm_grad(act, from_output, [&]<Act A, bool FromOutput>() {
      grad_input_kernel<A, FromOutput, scalar_t><<<elementwise_blocks(numel_of(sh)), kThreads, 0, stream>>>(
          static_cast<const scalar_t*>(g), static_cast<const scalar_t*>(saved), typed<U>(tables),
          static_cast<U>(alpha), sh, numel_of(sh), static_cast<scalar_t*>(dx));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

// A block's threads as the lanes of a reduction step: sums a part over the block in a fixed order.
struct BlockLanes {
  double* shared;
  __host__ __device__ double operator()(double part) const {
#ifdef __CUDA_ARCH__
    return block_sum(part, shared);
#else
    return part;
#endif
  }
};

// Reduction steps: one block per entry (its members can number thousands); the others: one
// thread per entry.
template <typename U>
__global__ void tables_kernel(NormTableStep step, NormTableView<U> view, int64_t entries) {
  if (norm_table_reduces(step)) {
    __shared__ double shared[kWarps];
    for (int64_t i = blockIdx.x; i < entries; i += gridDim.x) {
      norm_reduction_entry(view, step, i, threadIdx.x, kThreads, BlockLanes{shared});
    }
    return;
  }
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < entries; i += int64_t{gridDim.x} * blockDim.x) {
    norm_table_entry(view, step, i);
  }
}

template <typename U>
void tables(NormTableStep step, const NormTableView<U>& view) {
  const int64_t entries = norm_table_entries(view, step);
  if (entries == 0) return;
  const unsigned blocks = norm_table_reduces(step) ? static_cast<unsigned>(std::min<int64_t>(entries, 65535))
                                                   : elementwise_blocks(entries);
  tables_kernel<U><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(step, view, entries);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

const NormActKernels kCudaKernels{&moments, &forward, &grad_sums, &grad_input, &tables<float>, &tables<double>};

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_cuda(
    const at::Tensor& x, c10::string_view kind, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool batch_stats, double eps, c10::string_view act, double alpha,
    int64_t num_groups, bool keep_output) {
  const c10::cuda::CUDAGuard guard(x.device());
  return norm_act_forward(x, kind, weight, bias, running_mean, running_var, batch_stats, eps, act, alpha, num_groups,
                          keep_output, kCudaKernels);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_backward_cuda(
    const at::Tensor& grad, const at::Tensor& saved, bool saved_is_output, const at::Tensor& mean,
    const at::Tensor& var, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view kind, bool batch_stats, double eps, c10::string_view act, double alpha, int64_t num_groups,
    std::array<bool, 3> output_mask) {
  const c10::cuda::CUDAGuard guard(saved.device());
  return norm_act_backward(grad, saved, saved_is_output, mean, var, weight, bias, kind, batch_stats, eps, act, alpha,
                           num_groups, output_mask, kCudaKernels);
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CUDA, m) {
  m.impl("norm_act", &norm_act_cuda);
  m.impl("norm_act_backward", &norm_act_backward_cuda);
}

}  // namespace medkern
