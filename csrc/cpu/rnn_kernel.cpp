// CPU kernels of medkern::rnn_sequence (csrc/common/rnn.h), compiled once per CPU capability
// like bias_act_kernel.cpp. Each kernel handles one step: the sequences (rows) are split among
// threads, and a row's elements run in at::vec lanes with the math of csrc/common/rnn.h. No two
// rows share an output, so results do not depend on the thread count.

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/rnn.h"
#include "rnn_kernel.h"
#include "vec_io.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

// Calls f(j, count) over [0, n) in chunks of one vector.
template <typename U, typename F>
inline void for_lanes(int64_t n, F&& f) {
  constexpr int64_t kLanes = Vec<U>::size();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) f(j, kLanes);
  if (j < n) f(j, n - j);
}

// Runs row(b, scratch) for every sequence; tiny steps stay on the calling thread (an OpenMP
// region costs more than they do).
template <typename U, typename Row>
void for_each_row(const RnnShape& sh, int64_t scratch_size, Row&& row) {
  // rows per task: enough work to pay for a thread, and the rows spread evenly over the threads
  const int64_t per_row = std::max<int64_t>(1, sh.gates() + sh.state);
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t grain = std::max((int64_t{1} << 14) / per_row, (sh.batch + threads - 1) / threads);
  at::parallel_for(0, sh.batch, grain, [&](int64_t begin, int64_t end) {
    std::vector<U> scratch(scratch_size);
    for (int64_t b = begin; b < end; ++b) row(b, scratch.data());
  });
}

template <typename U>
inline Vec<U> load(const U* p, int64_t j, int64_t n) {
  return Vec<U>::loadu(p + j, n);
}

// A row's optional mask at j, or `fallback` lanes.
template <typename U>
inline Vec<U> load_or(const U* p, int64_t j, int64_t n, U fallback) {
  return p ? Vec<U>::loadu(p + j, n) : Vec<U>(fallback);
}

// mean and 1 / sqrt(var + eps) of v[0, n) (two passes, in U).
template <typename U>
std::pair<U, U> row_moments(const U* v, int64_t n, double eps) {
  Vec<U> acc(U(0));
  for_lanes<U>(n, [&](int64_t j, int64_t m) { acc = acc + Vec<U>::set(Vec<U>(U(0)), load(v, j, m), m); });
  const U mean = sum_lanes(acc) / U(n);
  Vec<U> acc2(U(0));
  for_lanes<U>(n, [&](int64_t j, int64_t m) {
    const Vec<U> d = Vec<U>::set(Vec<U>(U(0)), load(v, j, m) - Vec<U>(mean), m);
    acc2 = acc2 + d * d;
  });
  const U var = sum_lanes(acc2) / U(n);
  return {mean, U(1) / std::sqrt(var + U(eps))};
}

// xhat = (v - mean) * rstd into xhat_out, and out = xhat * weight + bias; returns rstd.
template <typename U>
U layer_norm_row(const U* v, int64_t n, const U* weight, const U* bias, double eps, U* xhat_out, U* out) {
  const auto [mean, rstd] = row_moments(v, n, eps);
  for_lanes<U>(n, [&](int64_t j, int64_t m) {
    const Vec<U> xh = (load(v, j, m) - Vec<U>(mean)) * Vec<U>(rstd);
    xh.store(xhat_out + j, m);
    (xh * load(weight, j, m) + load(bias, j, m)).store(out + j, m);
  });
  return rstd;
}

// dv = layer_norm_grad(dout * weight, ...) over a row, into dv (may alias nothing it reads).
template <typename U>
void layer_norm_grad_row(const U* dout, const U* xhat, U rstd, const U* weight, int64_t n, U* dv) {
  Vec<U> s1(U(0)), s2(U(0));
  for_lanes<U>(n, [&](int64_t j, int64_t m) {
    const Vec<U> dx = load(dout, j, m) * load(weight, j, m);
    s1 = s1 + dx;
    s2 = s2 + dx * load(xhat, j, m);
  });
  const U mean1 = sum_lanes(s1) / U(n), mean2 = sum_lanes(s2) / U(n);
  for_lanes<U>(n, [&](int64_t j, int64_t m) {
    const Vec<U> dx = load(dout, j, m) * load(weight, j, m);
    layer_norm_grad(dx, load(xhat, j, m), Vec<U>(rstd), Vec<U>(mean1), Vec<U>(mean2)).store(dv + j, m);
  });
}

template <typename U>
void zero_row(U* p, int64_t n) {
  std::fill(p, p + n, U(0));
}

template <typename scalar_t>
void zero_row_scalar(scalar_t* p, int64_t n) {
  std::fill(p, p + n, scalar_t(0));
}

// Writes n values of U into the data's dtype.
template <typename U, typename scalar_t>
void store_row(const U* src, scalar_t* dst, int64_t n) {
  if constexpr (std::is_same_v<U, scalar_t>) {
    std::copy(src, src + n, dst);
  } else {
    at::vec::convert(src, dst, n);
  }
}

// ---- forward ----

template <Cell C, typename scalar_t>
void cell_forward_typed(const RnnParams& p, const RnnForwardStep& st) {
  using U = at::opmath_type<scalar_t>;
  const RnnShape& sh = p.shape;
  const int64_t B = sh.batch, H = sh.hidden, G = sh.gates(), P = sh.state;
  const WorkLayout lay = sh.layout();
  const auto* xproj = static_cast<const scalar_t*>(st.xproj);
  const auto* pre = static_cast<const scalar_t*>(st.pre);
  const auto* h_prev = static_cast<const scalar_t*>(st.h_prev);
  const auto* c_prev = static_cast<const U*>(st.c_prev);
  auto* c_next = static_cast<U*>(st.c_next);
  auto* work = static_cast<U*>(st.work);
  auto* cand = static_cast<U*>(st.candidate);
  const auto* zc_all = static_cast<const U*>(st.zoneout_c);
  const auto* mask_all = static_cast<const U*>(st.mask);
  const auto* bias_hh = static_cast<const U*>(p.bias_hh);
  const auto* nh_w = static_cast<const U*>(p.norm_h_weight);
  const auto* nh_b = static_cast<const U*>(p.norm_h_bias);
  const auto* nc_w = static_cast<const U*>(p.norm_c_weight);
  const auto* nc_b = static_cast<const U*>(p.norm_c_bias);

  // scratch: xs [G], pre [G], rec [G], h_prev [P]
  for_each_row<U>(sh, 3 * G + P, [&](int64_t b, U* scratch) {
    U* w = work + b * lay.width;
    U* cb = cand + b * H;
    if (st.step >= sh.length(p.lengths, b)) {
      zero_row(w, lay.width);
      zero_row(cb, H);
      if constexpr (C == Cell::kLstm) std::copy(c_prev + b * H, c_prev + (b + 1) * H, c_next + b * H);
      return;
    }
    const int64_t t = sh.time_at(p.lengths, st.step, b);
    const U* xs = load_opmath(xproj + (t * B + b) * G, G, scratch);
    const U* rec = load_opmath(pre + b * G, G, scratch + G);
    if (sh.norm_h) {
      w[lay.rstd_h] = layer_norm_row(rec, G, nh_w, nh_b, p.eps, w + lay.xh, scratch + 2 * G);
      rec = scratch + 2 * G;
    } else if (bias_hh) {
      U* with_bias = scratch + 2 * G;
      for_lanes<U>(G, [&](int64_t k, int64_t m) { (load(rec, k, m) + load(bias_hh, k, m)).store(with_bias + k, m); });
      rec = with_bias;
    }
    const U* mask = mask_all ? mask_all + b * H : nullptr;
    if constexpr (C == Cell::kLstm) {
      const U* cp = c_prev + b * H;
      U* cn = c_next + b * H;
      const U* zc = zc_all ? zc_all + b * H : nullptr;
      U* c_new_out = sh.norm_c ? w + lay.xc : nullptr;  // c_new, normalized in place below
      for_lanes<U>(H, [&](int64_t j, int64_t m) {
        auto z = [&](int64_t gate) { return load(xs + gate * H, j, m) + load(rec + gate * H, j, m); };
        const LstmGates<Vec<U>> a = lstm_gates(z(0), z(1), z(2), z(3));
        a.i.store(w + j, m);
        a.f.store(w + H + j, m);
        a.g.store(w + 2 * H + j, m);
        a.o.store(w + 3 * H + j, m);
        const Vec<U> c_prev_v = load(cp, j, m);
        const Vec<U> c_new = lstm_cell(a, c_prev_v, load_or(mask, j, m, U(1)));
        (zc ? zoneout(load(zc, j, m), c_prev_v, c_new) : c_new).store(cn + j, m);
        if (c_new_out) {
          c_new.store(c_new_out + j, m);
        } else {
          const Vec<U> u = cell_tanh(c_new);
          u.store(w + lay.extra + j, m);
          (a.o * u).store(cb + j, m);
        }
      });
      if (sh.norm_c) {
        U* c_hat = scratch + 2 * G;  // rec is no longer needed
        w[lay.rstd_c] = layer_norm_row(c_new_out, H, nc_w, nc_b, p.eps, c_new_out, c_hat);
        for_lanes<U>(H, [&](int64_t j, int64_t m) {
          const Vec<U> u = cell_tanh(load(c_hat, j, m));
          u.store(w + lay.extra + j, m);
          (load(w + 3 * H, j, m) * u).store(cb + j, m);
        });
      }
    } else if constexpr (C == Cell::kGru) {
      const U* hp = load_opmath(h_prev + b * P, P, scratch + 3 * G);
      for_lanes<U>(H, [&](int64_t j, int64_t m) {
        const Vec<U> rn = load(rec + 2 * H, j, m);
        const GruGates<Vec<U>> a = gru_gates(load(xs, j, m), load(xs + H, j, m), load(xs + 2 * H, j, m),
                                             load(rec, j, m), load(rec + H, j, m), rn);
        a.r.store(w + j, m);
        a.z.store(w + H + j, m);
        a.n.store(w + 2 * H + j, m);
        rn.store(w + lay.extra + j, m);
        gru_candidate(a, load(hp, j, m), load_or(mask, j, m, U(1))).store(cb + j, m);
      });
    } else {
      for_lanes<U>(H, [&](int64_t j, int64_t m) {
        const Vec<U> h = rnn_candidate<C>(load(xs, j, m) + load(rec, j, m));
        h.store(w + j, m);
        h.store(cb + j, m);
      });
    }
  });
}

template <typename scalar_t>
void state_forward_typed(const RnnParams& p, const RnnForwardStep& st) {
  using U = at::opmath_type<scalar_t>;
  const RnnShape& sh = p.shape;
  const int64_t P = sh.state;
  const auto* h_prev = static_cast<const scalar_t*>(st.h_prev);
  auto* h_next = static_cast<scalar_t*>(st.h_next);
  const auto* cand = static_cast<const U*>(st.candidate);
  const auto* zh_all = static_cast<const U*>(st.zoneout_h);
  for_each_row<U>(sh, 2 * P, [&](int64_t b, U* scratch) {
    const scalar_t* hp_raw = h_prev + b * P;
    scalar_t* out = h_next + b * P;
    if (st.step >= sh.length(p.lengths, b)) {
      std::copy(hp_raw, hp_raw + P, out);
      return;
    }
    const U* cb = cand + b * P;
    if (zh_all == nullptr) {
      store_row(cb, out, P);
      return;
    }
    const U* hp = load_opmath(hp_raw, P, scratch);
    U* o = out_opmath<U>(out, scratch + P);
    const U* zh = zh_all + b * P;
    for_lanes<U>(P, [&](int64_t j, int64_t m) {
      zoneout(load(zh, j, m), load(hp, j, m), load(cb, j, m)).store(o + j, m);
    });
    store_opmath(o, out, P);
  });
}

// ---- backward ----

template <typename scalar_t>
void state_backward_typed(const RnnParams& p, const RnnBackwardStep& st) {
  using U = at::opmath_type<scalar_t>;
  const RnnShape& sh = p.shape;
  const int64_t P = sh.state;
  const auto* grad_next = static_cast<const scalar_t*>(st.grad_h_next);
  const auto* gemm = static_cast<const scalar_t*>(st.gemm_h);
  auto* carry = static_cast<U*>(st.carry_h);
  auto* dcand = static_cast<U*>(st.d_candidate);
  const auto* zh_all = static_cast<const U*>(st.zoneout_h);
  for_each_row<U>(sh, 2 * P, [&](int64_t b, U* scratch) {
    const U* g = load_opmath(grad_next + b * P, P, scratch);
    const U* gm = gemm ? load_opmath(gemm + b * P, P, scratch + P) : nullptr;
    U* cr = carry + b * P;
    U* dc = dcand + b * P;
    const bool active = st.step < sh.length(p.lengths, b);
    const U* zh = zh_all ? zh_all + b * P : nullptr;
    for_lanes<U>(P, [&](int64_t j, int64_t m) {
      Vec<U> dh = load(cr, j, m) + load(g, j, m);
      if (gm) dh = dh + load(gm, j, m);
      if (!active) {
        dh.store(cr + j, m);
        Vec<U>(U(0)).store(dc + j, m);
      } else if (zh) {
        const Vec<U> keep = load(zh, j, m);
        (keep * dh).store(cr + j, m);
        ((Vec<U>(U(1)) - keep) * dh).store(dc + j, m);
      } else {
        Vec<U>(U(0)).store(cr + j, m);
        dh.store(dc + j, m);
      }
    });
  });
}

template <Cell C, typename scalar_t>
void cell_backward_typed(const RnnParams& p, const RnnBackwardStep& st) {
  using U = at::opmath_type<scalar_t>;
  const RnnShape& sh = p.shape;
  const int64_t B = sh.batch, H = sh.hidden, G = sh.gates(), P = sh.state;
  const WorkLayout lay = sh.layout();
  const auto* dh_all = static_cast<const U*>(sh.proj ? st.d_hidden : st.d_candidate);
  const auto* grad_c_next = static_cast<const U*>(st.grad_c_next);
  auto* carry_c = static_cast<U*>(st.carry_c);
  auto* carry_h = static_cast<U*>(st.carry_h);
  const auto* h_prev = static_cast<const scalar_t*>(st.h_prev);
  const auto* c_prev = static_cast<const U*>(st.c_prev);
  const auto* work = static_cast<const U*>(st.work);
  auto* dxproj = static_cast<scalar_t*>(st.dxproj);
  auto* dpre = static_cast<scalar_t*>(st.dpre);
  auto* drec_all = static_cast<U*>(st.drec);
  auto* dc_hat_all = static_cast<U*>(st.dc_hat);
  const auto* zc_all = static_cast<const U*>(st.zoneout_c);
  const auto* mask_all = static_cast<const U*>(st.mask);
  const auto* nh_w = static_cast<const U*>(p.norm_h_weight);
  const auto* nc_w = static_cast<const U*>(p.norm_c_weight);

  // scratch: dz (gates' input parts) [G], drec [G], dpre [G], h_prev [P], d c_hat [H], dc from u [H]
  for_each_row<U>(sh, 3 * G + P + 2 * H, [&](int64_t b, U* scratch) {
    const int64_t t = sh.time_at(p.lengths, st.step, b);
    scalar_t* dx_row = dxproj + (t * B + b) * G;
    scalar_t* dpre_row = dpre + b * G;
    U* cc = C == Cell::kLstm ? carry_c + b * H : nullptr;
    const U* gc = grad_c_next ? grad_c_next + b * H : nullptr;
    if (st.step >= sh.length(p.lengths, b)) {
      zero_row_scalar(dx_row, G);
      if (dpre_row != dx_row) zero_row_scalar(dpre_row, G);
      if (drec_all) zero_row(drec_all + b * G, G);
      if (dc_hat_all) zero_row(dc_hat_all + b * H, H);
      if (cc && gc) for (int64_t j = 0; j < H; ++j) cc[j] += gc[j];
      return;
    }
    const U* w = work + b * lay.width;
    const U* dh = dh_all + b * H;
    const U* mask = mask_all ? mask_all + b * H : nullptr;
    U* dz = scratch;
    U* drec = C == Cell::kGru ? scratch + G : dz;  // lstm and rnn: d rec = d z
    if constexpr (C == Cell::kLstm) {
      const U* cp = c_prev + b * H;
      const U* zc = zc_all ? zc_all + b * H : nullptr;
      U* dc_hat = dc_hat_all ? dc_hat_all + b * H : scratch + 3 * G + P;
      U* dc_u = scratch + 3 * G + P + H;
      for_lanes<U>(H, [&](int64_t j, int64_t m) {
        const LstmOutputGrad<Vec<U>> og = lstm_output_grad(load(dh, j, m), load(w + 3 * H, j, m),
                                                           load(w + lay.extra, j, m));
        og.dzo.store(dz + 3 * H + j, m);
        og.dc_hat.store(dc_hat + j, m);
      });
      if (sh.norm_c) {
        layer_norm_grad_row(dc_hat, w + lay.xc, w[lay.rstd_c], nc_w, H, dc_u);
      } else {
        dc_u = dc_hat;
      }
      for_lanes<U>(H, [&](int64_t j, int64_t m) {
        Vec<U> dC = load(cc, j, m);
        if (gc) dC = dC + load(gc, j, m);
        const Vec<U> keep = load_or(zc, j, m, U(0));
        const Vec<U> dc_new = (Vec<U>(U(1)) - keep) * dC + load(dc_u, j, m);
        const LstmGates<Vec<U>> a{load(w, j, m), load(w + H, j, m), load(w + 2 * H, j, m), load(w + 3 * H, j, m)};
        const LstmCellGrad<Vec<U>> cg = lstm_cell_grad(a, load(cp, j, m), load_or(mask, j, m, U(1)), dc_new);
        cg.dzi.store(dz + j, m);
        cg.dzf.store(dz + H + j, m);
        cg.dzg.store(dz + 2 * H + j, m);
        (keep * dC + cg.dc_prev).store(cc + j, m);
      });
    } else if constexpr (C == Cell::kGru) {
      const U* hp = load_opmath(h_prev + b * P, P, scratch + 3 * G);
      U* ch = carry_h + b * P;
      for_lanes<U>(H, [&](int64_t j, int64_t m) {
        const GruGates<Vec<U>> a{load(w, j, m), load(w + H, j, m), load(w + 2 * H, j, m)};
        const GruGrad<Vec<U>> g = gru_grad(a, load(w + lay.extra, j, m), load(hp, j, m),
                                           load_or(mask, j, m, U(1)), load(dh, j, m));
        g.dxr.store(dz + j, m);
        g.dxz.store(dz + H + j, m);
        g.dxn.store(dz + 2 * H + j, m);
        g.dxr.store(drec + j, m);
        g.dxz.store(drec + H + j, m);
        g.drn.store(drec + 2 * H + j, m);
        (load(ch, j, m) + g.dh_prev).store(ch + j, m);
      });
    } else {
      for_lanes<U>(H, [&](int64_t j, int64_t m) {
        rnn_grad<C>(load(w, j, m), load(dh, j, m)).store(dz + j, m);
      });
    }
    store_row(dz, dx_row, G);
    const U* dp = drec;
    if (sh.norm_h) {
      std::copy(drec, drec + G, drec_all + b * G);
      U* dnorm = scratch + 2 * G;
      layer_norm_grad_row(drec, w + lay.xh, w[lay.rstd_h], nh_w, G, dnorm);
      dp = dnorm;
    }
    if (dpre_row != dx_row) store_row(dp, dpre_row, G);
  });
}

void cell_forward(at::ScalarType dtype, const RnnParams& p, const RnnForwardStep& st) {
  MEDKERN_RNN_DISPATCH(dtype, [&] {
    dispatch_cell(p.shape.cell, [&](auto c) { cell_forward_typed<decltype(c)::value, scalar_t>(p, st); });
  });
}

void state_forward(at::ScalarType dtype, const RnnParams& p, const RnnForwardStep& st) {
  MEDKERN_RNN_DISPATCH(dtype, [&] { state_forward_typed<scalar_t>(p, st); });
}

void state_backward(at::ScalarType dtype, const RnnParams& p, const RnnBackwardStep& st) {
  MEDKERN_RNN_DISPATCH(dtype, [&] { state_backward_typed<scalar_t>(p, st); });
}

void cell_backward(at::ScalarType dtype, const RnnParams& p, const RnnBackwardStep& st) {
  MEDKERN_RNN_DISPATCH(dtype, [&] {
    dispatch_cell(p.shape.cell, [&](auto c) { cell_backward_typed<decltype(c)::value, scalar_t>(p, st); });
  });
}

}  // namespace

RnnKernels rnn_kernels() { return {&cell_forward, &state_forward, &state_backward, &cell_backward}; }

}  // namespace medkern::cpu::CPU_CAPABILITY
