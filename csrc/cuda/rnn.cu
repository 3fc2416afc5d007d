// CUDA kernels of medkern::rnn_sequence (csrc/common/rnn.h): indexing and launch only. The
// math is csrc/common/rnn.h, as on the CPU; the host loop and the cuBLAS GEMMs between the
// kernels are csrc/rnn_op.cpp.
//
// The cell kernels run one block per sequence (row): thread j takes elements j, j + kThreads,
// ... of each gate, and the layer norms reduce over the row with block_sum. Where a pass reads
// row elements another thread wrote (the recurrent layer norm), a __syncthreads() separates
// the passes. The state kernels are elementwise over B x P.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../rnn_op.h"
#include "block_reduce.cuh"

namespace medkern {
namespace {

template <typename U>
__device__ U mask_or(const U* m, int64_t j, U fallback) {
  return m ? m[j] : fallback;
}

// mean and 1 / sqrt(var + eps) of a row of n values the block reads through value(k).
template <typename U, typename F>
__device__ void row_moments(int64_t n, double eps, U* shared, F&& value, U& mean, U& rstd) {
  U s = U(0);
  for (int64_t k = threadIdx.x; k < n; k += kThreads) s += value(k);
  mean = block_sum(s, shared) / U(n);
  U s2 = U(0);
  for (int64_t k = threadIdx.x; k < n; k += kThreads) {
    const U d = value(k) - mean;
    s2 += d * d;
  }
  rstd = U(1) / ::sqrt(block_sum(s2, shared) / U(n) + U(eps));
}

template <Cell C, typename scalar_t>
__global__ void cell_forward_kernel(RnnParams p, RnnForwardStep st) {
  using U = at::opmath_type<scalar_t>;
  __shared__ U shared[kWarps];
  const RnnShape& sh = p.shape;
  const int64_t b = blockIdx.x, B = sh.batch, H = sh.hidden, G = sh.gates(), P = sh.state;
  const WorkLayout lay = sh.layout();
  U* w = static_cast<U*>(st.work) + b * lay.width;
  U* cand = static_cast<U*>(st.candidate) + b * H;
  const U* cp = C == Cell::kLstm ? static_cast<const U*>(st.c_prev) + b * H : nullptr;
  U* cn = C == Cell::kLstm ? static_cast<U*>(st.c_next) + b * H : nullptr;
  if (st.step >= sh.length(p.lengths, b)) {
    for (int64_t k = threadIdx.x; k < lay.width; k += kThreads) w[k] = U(0);
    for (int64_t j = threadIdx.x; j < H; j += kThreads) {
      cand[j] = U(0);
      if (cn) cn[j] = cp[j];
    }
    return;
  }
  const int64_t t = sh.time_at(p.lengths, st.step, b);
  const scalar_t* xs = static_cast<const scalar_t*>(st.xproj) + (t * B + b) * G;
  const scalar_t* pre = static_cast<const scalar_t*>(st.pre) + b * G;
  const U* nh_w = static_cast<const U*>(p.norm_h_weight);
  const U* nh_b = static_cast<const U*>(p.norm_h_bias);
  if (sh.norm_h) {
    U mean, rstd;
    row_moments<U>(G, p.eps, shared, [&](int64_t k) { return static_cast<U>(pre[k]); }, mean, rstd);
    for (int64_t k = threadIdx.x; k < G; k += kThreads) w[lay.xh + k] = (static_cast<U>(pre[k]) - mean) * rstd;
    if (threadIdx.x == 0) w[lay.rstd_h] = rstd;
    __syncthreads();  // each thread reads normalized values other threads wrote
  }
  const U* bias = static_cast<const U*>(p.bias_hh);
  auto rec = [&](int64_t k) {
    if (sh.norm_h) return w[lay.xh + k] * nh_w[k] + nh_b[k];
    return bias ? static_cast<U>(pre[k]) + bias[k] : static_cast<U>(pre[k]);
  };
  auto x = [&](int64_t k) { return static_cast<U>(xs[k]); };
  const U* mask = st.mask ? static_cast<const U*>(st.mask) + b * H : nullptr;
  if constexpr (C == Cell::kLstm) {
    const U* zc = st.zoneout_c ? static_cast<const U*>(st.zoneout_c) + b * H : nullptr;
    for (int64_t j = threadIdx.x; j < H; j += kThreads) {
      const LstmGates<U> a = lstm_gates(x(j) + rec(j), x(H + j) + rec(H + j), x(2 * H + j) + rec(2 * H + j),
                                        x(3 * H + j) + rec(3 * H + j));
      w[j] = a.i;
      w[H + j] = a.f;
      w[2 * H + j] = a.g;
      w[3 * H + j] = a.o;
      const U c_new = lstm_cell(a, cp[j], mask_or(mask, j, U(1)));
      cn[j] = zc ? zoneout(zc[j], cp[j], c_new) : c_new;
      if (sh.norm_c) {
        w[lay.xc + j] = c_new;  // normalized below; each thread reads back only its own j
      } else {
        const U u = cell_tanh(c_new);
        w[lay.extra + j] = u;
        cand[j] = a.o * u;
      }
    }
    if (sh.norm_c) {
      const U* nc_w = static_cast<const U*>(p.norm_c_weight);
      const U* nc_b = static_cast<const U*>(p.norm_c_bias);
      U mean, rstd;
      row_moments<U>(H, p.eps, shared, [&](int64_t j) { return w[lay.xc + j]; }, mean, rstd);
      for (int64_t j = threadIdx.x; j < H; j += kThreads) {
        const U xc = (w[lay.xc + j] - mean) * rstd;
        w[lay.xc + j] = xc;
        const U u = cell_tanh(xc * nc_w[j] + nc_b[j]);
        w[lay.extra + j] = u;
        cand[j] = w[3 * H + j] * u;
      }
      if (threadIdx.x == 0) w[lay.rstd_c] = rstd;
    }
  } else if constexpr (C == Cell::kGru) {
    const scalar_t* hp = static_cast<const scalar_t*>(st.h_prev) + b * P;
    for (int64_t j = threadIdx.x; j < H; j += kThreads) {
      const U rn = rec(2 * H + j);
      const GruGates<U> a = gru_gates(x(j), x(H + j), x(2 * H + j), rec(j), rec(H + j), rn);
      w[j] = a.r;
      w[H + j] = a.z;
      w[2 * H + j] = a.n;
      w[lay.extra + j] = rn;
      cand[j] = gru_candidate(a, static_cast<U>(hp[j]), mask_or(mask, j, U(1)));
    }
  } else {
    for (int64_t j = threadIdx.x; j < H; j += kThreads) {
      const U h = rnn_candidate<C>(x(j) + rec(j));
      w[j] = h;
      cand[j] = h;
    }
  }
}

template <typename scalar_t>
__global__ void state_forward_kernel(RnnParams p, RnnForwardStep st) {
  using U = at::opmath_type<scalar_t>;
  const RnnShape& sh = p.shape;
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i >= sh.batch * sh.state) return;
  const int64_t b = i / sh.state;
  const scalar_t hp = static_cast<const scalar_t*>(st.h_prev)[i];
  scalar_t& out = static_cast<scalar_t*>(st.h_next)[i];
  if (st.step >= sh.length(p.lengths, b)) {
    out = hp;
    return;
  }
  const U cand = static_cast<const U*>(st.candidate)[i];
  const U* zh = static_cast<const U*>(st.zoneout_h);
  out = static_cast<scalar_t>(zh ? zoneout(zh[i], static_cast<U>(hp), cand) : cand);
}

template <typename scalar_t>
__global__ void state_backward_kernel(RnnParams p, RnnBackwardStep st) {
  using U = at::opmath_type<scalar_t>;
  const RnnShape& sh = p.shape;
  const int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x;
  if (i >= sh.batch * sh.state) return;
  const int64_t b = i / sh.state;
  U* carry = static_cast<U*>(st.carry_h);
  U* dcand = static_cast<U*>(st.d_candidate);
  U dh = carry[i] + static_cast<U>(static_cast<const scalar_t*>(st.grad_h_next)[i]);
  if (st.gemm_h) dh += static_cast<U>(static_cast<const scalar_t*>(st.gemm_h)[i]);
  if (st.step >= sh.length(p.lengths, b)) {
    carry[i] = dh;
    dcand[i] = U(0);
    return;
  }
  const U keep = st.zoneout_h ? static_cast<const U*>(st.zoneout_h)[i] : U(0);
  carry[i] = keep * dh;
  dcand[i] = (U(1) - keep) * dh;
}

// dv[k] = layer_norm_grad(dout(k) * weight[k], xhat[k], ...) over a row of n, written by out(k, v).
template <typename U, typename D, typename Out>
__device__ void layer_norm_grad_row(int64_t n, const U* xhat, U rstd, const U* weight, U* shared, D&& dout,
                                    Out&& out) {
  U s1 = U(0), s2 = U(0);
  for (int64_t k = threadIdx.x; k < n; k += kThreads) {
    const U dx = dout(k) * weight[k];
    s1 += dx;
    s2 += dx * xhat[k];
  }
  const U mean1 = block_sum(s1, shared) / U(n);
  const U mean2 = block_sum(s2, shared) / U(n);
  for (int64_t k = threadIdx.x; k < n; k += kThreads) {
    out(k, layer_norm_grad(dout(k) * weight[k], xhat[k], rstd, mean1, mean2));
  }
}

template <Cell C, typename scalar_t>
__global__ void cell_backward_kernel(RnnParams p, RnnBackwardStep st) {
  using U = at::opmath_type<scalar_t>;
  __shared__ U shared[kWarps];
  const RnnShape& sh = p.shape;
  const int64_t b = blockIdx.x, B = sh.batch, H = sh.hidden, G = sh.gates(), P = sh.state;
  const WorkLayout lay = sh.layout();
  const int64_t t = sh.time_at(p.lengths, st.step, b);
  scalar_t* dx = static_cast<scalar_t*>(st.dxproj) + (t * B + b) * G;
  scalar_t* dpre = static_cast<scalar_t*>(st.dpre) + b * G;
  U* drec = sh.norm_h ? static_cast<U*>(st.drec) + b * G : nullptr;
  U* dc_hat = sh.norm_c ? static_cast<U*>(st.dc_hat) + b * H : nullptr;
  U* cc = C == Cell::kLstm ? static_cast<U*>(st.carry_c) + b * H : nullptr;
  const U* gc = st.grad_c_next ? static_cast<const U*>(st.grad_c_next) + b * H : nullptr;
  if (st.step >= sh.length(p.lengths, b)) {
    for (int64_t k = threadIdx.x; k < G; k += kThreads) {
      dx[k] = scalar_t(0);
      dpre[k] = scalar_t(0);
      if (drec) drec[k] = U(0);
    }
    for (int64_t j = threadIdx.x; j < H; j += kThreads) {
      if (dc_hat) dc_hat[j] = U(0);
      if (cc && gc) cc[j] += gc[j];
    }
    return;
  }
  const U* w = static_cast<const U*>(st.work) + b * lay.width;
  const U* dh = static_cast<const U*>(sh.proj ? st.d_hidden : st.d_candidate) + b * H;
  const U* mask = st.mask ? static_cast<const U*>(st.mask) + b * H : nullptr;
  // d of gate k's input part into dxproj, and of its recurrent part into drec (or dpre)
  auto put = [&](int64_t k, U d_input, U d_rec) {
    dx[k] = static_cast<scalar_t>(d_input);
    if (drec) {
      drec[k] = d_rec;
    } else {
      dpre[k] = static_cast<scalar_t>(d_rec);
    }
  };
  if constexpr (C == Cell::kLstm) {
    const U* cp = static_cast<const U*>(st.c_prev) + b * H;
    const U* zc = st.zoneout_c ? static_cast<const U*>(st.zoneout_c) + b * H : nullptr;
    // pass 1 (norm_c only): d c_hat, reduced for the cell layer norm's backward
    U mean1 = U(0), mean2 = U(0);
    const U* nc_w = static_cast<const U*>(p.norm_c_weight);
    if (sh.norm_c) {
      U s1 = U(0), s2 = U(0);
      for (int64_t j = threadIdx.x; j < H; j += kThreads) {
        const U d = lstm_output_grad(dh[j], w[3 * H + j], w[lay.extra + j]).dc_hat;
        dc_hat[j] = d;
        s1 += d * nc_w[j];
        s2 += d * nc_w[j] * w[lay.xc + j];
      }
      mean1 = block_sum(s1, shared) / U(H);
      mean2 = block_sum(s2, shared) / U(H);
    }
    for (int64_t j = threadIdx.x; j < H; j += kThreads) {
      const LstmOutputGrad<U> og = lstm_output_grad(dh[j], w[3 * H + j], w[lay.extra + j]);
      const U dc_u = sh.norm_c ? layer_norm_grad(og.dc_hat * nc_w[j], w[lay.xc + j], w[lay.rstd_c], mean1, mean2)
                               : og.dc_hat;
      const U dC = cc[j] + (gc ? gc[j] : U(0));
      const U keep = mask_or(zc, j, U(0));
      const U dc_new = (U(1) - keep) * dC + dc_u;
      const LstmGates<U> a{w[j], w[H + j], w[2 * H + j], w[3 * H + j]};
      const LstmCellGrad<U> cg = lstm_cell_grad(a, cp[j], mask_or(mask, j, U(1)), dc_new);
      put(j, cg.dzi, cg.dzi);
      put(H + j, cg.dzf, cg.dzf);
      put(2 * H + j, cg.dzg, cg.dzg);
      put(3 * H + j, og.dzo, og.dzo);
      cc[j] = keep * dC + cg.dc_prev;
    }
  } else if constexpr (C == Cell::kGru) {
    const scalar_t* hp = static_cast<const scalar_t*>(st.h_prev) + b * P;
    U* ch = static_cast<U*>(st.carry_h) + b * P;
    for (int64_t j = threadIdx.x; j < H; j += kThreads) {
      const GruGates<U> a{w[j], w[H + j], w[2 * H + j]};
      const GruGrad<U> g = gru_grad(a, w[lay.extra + j], static_cast<U>(hp[j]), mask_or(mask, j, U(1)), dh[j]);
      put(j, g.dxr, g.dxr);
      put(H + j, g.dxz, g.dxz);
      put(2 * H + j, g.dxn, g.drn);
      ch[j] += g.dh_prev;
    }
  } else {
    for (int64_t j = threadIdx.x; j < H; j += kThreads) {
      const U d = rnn_grad<C>(w[j], dh[j]);
      put(j, d, d);
    }
  }
  if (sh.norm_h) {
    __syncthreads();  // the row's drec, written by all threads, is read by all
    layer_norm_grad_row<U>(G, w + lay.xh, w[lay.rstd_h], static_cast<const U*>(p.norm_h_weight), shared,
                           [&](int64_t k) { return drec[k]; },
                           [&](int64_t k, U v) { dpre[k] = static_cast<scalar_t>(v); });
  }
}

unsigned elementwise_blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

void cell_forward(at::ScalarType dtype, const RnnParams& p, const RnnForwardStep& st) {
  if (p.shape.batch == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  MEDKERN_RNN_DISPATCH(dtype, [&] {
    dispatch_cell(p.shape.cell, [&](auto c) {
      cell_forward_kernel<decltype(c)::value, scalar_t><<<p.shape.batch, kThreads, 0, stream>>>(p, st);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void state_forward(at::ScalarType dtype, const RnnParams& p, const RnnForwardStep& st) {
  const int64_t n = p.shape.batch * p.shape.state;
  if (n == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  MEDKERN_RNN_DISPATCH(dtype, [&] { state_forward_kernel<scalar_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(p, st); });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void state_backward(at::ScalarType dtype, const RnnParams& p, const RnnBackwardStep& st) {
  const int64_t n = p.shape.batch * p.shape.state;
  if (n == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  MEDKERN_RNN_DISPATCH(dtype, [&] { state_backward_kernel<scalar_t><<<elementwise_blocks(n), kThreads, 0, stream>>>(p, st); });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void cell_backward(at::ScalarType dtype, const RnnParams& p, const RnnBackwardStep& st) {
  if (p.shape.batch == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  MEDKERN_RNN_DISPATCH(dtype, [&] {
    dispatch_cell(p.shape.cell, [&](auto c) {
      cell_backward_kernel<decltype(c)::value, scalar_t><<<p.shape.batch, kThreads, 0, stream>>>(p, st);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

const RnnKernels kCudaKernels{&cell_forward, &state_forward, &state_backward, &cell_backward};

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_sequence_cuda(
    const at::Tensor& xproj, const at::Tensor& weight_hh, const OptTensor& bias_hh, const at::Tensor& h0,
    const OptTensor& c0, const OptTensor& lengths, c10::string_view cell, bool reverse, const OptTensor& weight_hr,
    const OptTensor& norm_h_weight, const OptTensor& norm_h_bias, const OptTensor& norm_c_weight,
    const OptTensor& norm_c_bias, double eps, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
    const OptTensor& candidate_mask) {
  const c10::cuda::CUDAGuard guard(xproj.device());
  return rnn_sequence_forward(xproj, weight_hh, bias_hh, h0, c0, lengths, cell, reverse, weight_hr, norm_h_weight,
                              norm_h_bias, norm_c_weight, norm_c_bias, eps, zoneout_h, zoneout_c, candidate_mask,
                              kCudaKernels);
}

auto rnn_sequence_backward_cuda(const at::Tensor& grad_states, const OptTensor& grad_cells, const at::Tensor& states,
                                const at::Tensor& cells, const at::Tensor& work, const at::Tensor& weight_hh,
                                bool has_bias_hh, const OptTensor& lengths, c10::string_view cell, bool reverse,
                                const OptTensor& weight_hr, const OptTensor& norm_h_weight,
                                const OptTensor& norm_c_weight, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
                                const OptTensor& candidate_mask) {
  const c10::cuda::CUDAGuard guard(states.device());
  return rnn_sequence_backward(grad_states, grad_cells, states, cells, work, weight_hh, has_bias_hh, lengths, cell,
                               reverse, weight_hr, norm_h_weight, norm_c_weight, zoneout_h, zoneout_c, candidate_mask,
                               kCudaKernels);
}

at::Tensor transposed_product_cuda(const at::Tensor& a, const at::Tensor& b) {
  const c10::cuda::CUDAGuard guard(a.device());
  return transposed_product(a, b, kCudaKernels);  // the library's GEMM (cuBLAS)
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CUDA, m) {
  m.impl("rnn_sequence", &rnn_sequence_cuda);
  m.impl("rnn_sequence_backward", &rnn_sequence_backward_cuda);
  m.impl("transposed_product", &transposed_product_cuda);
}

}  // namespace medkern
