#pragma once
// medkern::rnn_sequence: the cells' per-element math (shared by the CPU and CUDA kernels, so the
// CPU tests exercise what the GPU runs), the shape of a call and the layout of its workspace.
// The formulas are stated in medkern/reference/rnn.py; T below is float or double (or
// at::vec::Vectorized of them on the CPU), the op-math type U of the data.
//
// Per step s and sequence b, the kernels read and write rows of these buffers:
//   xproj  [T, B, G]  input projection (x's dtype), read at time t = time_at(s, b)
//   pre    [B, G]     h[s] @ weight_hh.T; the recurrent part of the gates' arguments is
//                     pre + bias_hh, or the layer norm of pre (norm_h)
//   states [T+1, B, P], cells [T+1, B, H] (U): h and c before/after each step
//   work   [T, B, W]  (U) what backward needs of step s, laid out by WorkLayout

#include <ATen/Dispatch.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "activations.h"
#include "fixed_gemm.h"
#include "math.h"

namespace medkern {

enum class Cell : int { kLstm = 0, kGru = 1, kRnnTanh = 2, kRnnRelu = 3 };

inline Cell parse_cell(c10::string_view op, c10::string_view name) {
  const std::string n(name);
  if (n == "lstm") return Cell::kLstm;
  if (n == "gru") return Cell::kGru;
  if (n == "rnn_tanh") return Cell::kRnnTanh;
  if (n == "rnn_relu") return Cell::kRnnRelu;
  TORCH_CHECK_VALUE(false, op, ": unknown cell='", n, "'; expected one of lstm, gru, rnn_tanh, rnn_relu");
}

C10_HOST_DEVICE constexpr int64_t gate_count(Cell cell) { return cell == Cell::kLstm ? 4 : cell == Cell::kGru ? 3 : 1; }

// Offsets (in elements of U) of what one row of `work` holds, and its width.
//   lstm: i f g o (activated, g before the candidate mask), u = tanh(cell-normalized c_new)
//   gru:  r z n (activated, n before the mask), rn = the recurrent part of n's argument
//   rnn:  the candidate act(xs + rec)
//   recurrent layer norm: xh = the normalized pre (G), rstd_h; cell layer norm: xc (H), rstd_c
struct WorkLayout {
  int64_t gates = 0, extra = -1, xh = -1, rstd_h = -1, xc = -1, rstd_c = -1, width = 0;

  C10_HOST_DEVICE WorkLayout(Cell cell, int64_t hidden, bool norm_h, bool norm_c) {
    const int64_t g = gate_count(cell) * hidden;
    width = g;
    if (cell != Cell::kRnnTanh && cell != Cell::kRnnRelu) {
      extra = width;  // lstm: u; gru: rn
      width += hidden;
    }
    if (norm_h) {
      xh = width;
      rstd_h = width + g;
      width += g + 1;
    }
    if (norm_c) {
      xc = width;
      rstd_c = width + hidden;
      width += hidden + 1;
    }
  }
};

struct RnnShape {
  int64_t steps = 0, batch = 0, hidden = 0, state = 0;  // T, B, H, P (P = proj_size or H)
  Cell cell = Cell::kLstm;
  bool norm_h = false, norm_c = false, proj = false, reverse = false;

  C10_HOST_DEVICE int64_t gates() const { return gate_count(cell) * hidden; }
  C10_HOST_DEVICE WorkLayout layout() const { return WorkLayout(cell, hidden, norm_h, norm_c); }
  // Sequence b runs at step s while s < lengths[b] (all T steps without lengths), reading time
  // s, or lengths[b] - 1 - s if reverse; finished sequences map s to itself, so over all steps
  // each (t, b) of xproj is visited exactly once.
  C10_HOST_DEVICE int64_t length(const int64_t* lengths, int64_t b) const { return lengths ? lengths[b] : steps; }
  C10_HOST_DEVICE int64_t time_at(const int64_t* lengths, int64_t s, int64_t b) const {
    const int64_t len = length(lengths, b);
    return reverse && s < len ? len - 1 - s : s;
  }
};

// ---- the per-element math ----

template <typename T>
C10_HOST_DEVICE inline T sigmoid(const T& z) {
  return activation<Act::kSigmoid, 0>(z, z);
}

// The cells' tanh. On CPU float vectors it costs one exp and one division, as sigmoid does
// (Sleef's vector tanh costs about 2.5 times that, and an LSTM step takes two tanh per element):
// 1 - 2 / (exp(2z) + 1), which is within a few ulp for |z| >= 1/4, and tanh's odd Taylor
// series to z^9 below, where that would cancel (truncation error < 1e-8 relative). Scalars,
// double vectors and CUDA use the library's tanh.
template <typename T>
C10_HOST_DEVICE inline T cell_tanh(const T& z) {
  return tanh_(z);
}

#ifdef MEDKERN_HAS_VEC
inline Vec<float> cell_tanh(const Vec<float>& z) {
  const Vec<float> one(1.f), two(2.f);
  const Vec<float> far = one - two / (exp_(z * two) + one);
  const Vec<float> z2 = z * z;
  const Vec<float> near =
      z * (one + z2 * (Vec<float>(-1.f / 3) +
                       z2 * (Vec<float>(2.f / 15) + z2 * (Vec<float>(-17.f / 315) + z2 * Vec<float>(62.f / 2835)))));
  return select(z.abs() < Vec<float>(0.25f), near, far);
}
#endif

template <typename T>
C10_HOST_DEVICE inline T one_like() {
  using S = typename scalar_of<T>::type;
  return T(S(1));
}

// keep * prev + (1 - keep) * next: zoneout (keep is 0/1 in training, the probability in eval),
// exact for keep = 0 and keep = 1.
template <typename T>
C10_HOST_DEVICE inline T zoneout(const T& keep, const T& prev, const T& next) {
  return keep * prev + (one_like<T>() - keep) * next;
}

// LSTM: gates from their arguments (xs + rec), and the new cell before zoneout.
template <typename T>
struct LstmGates {
  T i, f, g, o;
};

template <typename T>
C10_HOST_DEVICE inline LstmGates<T> lstm_gates(const T& zi, const T& zf, const T& zg, const T& zo) {
  return {sigmoid(zi), sigmoid(zf), cell_tanh(zg), sigmoid(zo)};
}

template <typename T>
C10_HOST_DEVICE inline T lstm_cell(const LstmGates<T>& a, const T& c_prev, const T& mask) {
  return a.f * c_prev + a.i * (a.g * mask);
}

// Backward of h~ = o * u, u = tanh(c_hat): (d of o's argument, d of c_hat).
template <typename T>
struct LstmOutputGrad {
  T dzo, dc_hat;
};

template <typename T>
C10_HOST_DEVICE inline LstmOutputGrad<T> lstm_output_grad(const T& dh, const T& o, const T& u) {
  const T one = one_like<T>();
  return {dh * u * o * (one - o), dh * o * (one - u * u)};
}

// Backward of c_new = f * c_prev + i * g * mask, given d c_new: the gates' argument gradients
// and the part of d c_prev that flows through f.
template <typename T>
struct LstmCellGrad {
  T dzi, dzf, dzg, dc_prev;
};

template <typename T>
C10_HOST_DEVICE inline LstmCellGrad<T> lstm_cell_grad(const LstmGates<T>& a, const T& c_prev, const T& mask,
                                                      const T& dc_new) {
  const T one = one_like<T>();
  const T gm = a.g * mask;
  return {dc_new * gm * a.i * (one - a.i), dc_new * c_prev * a.f * (one - a.f),
          dc_new * a.i * mask * (one - a.g * a.g), dc_new * a.f};
}

// GRU: r, z, n from the input part xs and the recurrent part rec of each gate's argument.
template <typename T>
struct GruGates {
  T r, z, n;
};

template <typename T>
C10_HOST_DEVICE inline GruGates<T> gru_gates(const T& xr, const T& xz, const T& xn, const T& rr, const T& rz,
                                             const T& rn) {
  const T r = sigmoid(xr + rr);
  return {r, sigmoid(xz + rz), cell_tanh(xn + r * rn)};
}

template <typename T>
C10_HOST_DEVICE inline T gru_candidate(const GruGates<T>& a, const T& h_prev, const T& mask) {
  return (one_like<T>() - a.z) * (a.n * mask) + a.z * h_prev;
}

// Backward of the GRU candidate given its gradient dh: the gradients of the gates' input parts
// (dxr = drec_r, dxz = drec_z), of rn's (drn), and the part of d h_prev through z.
template <typename T>
struct GruGrad {
  T dxr, dxz, dxn, drn, dh_prev;
};

template <typename T>
C10_HOST_DEVICE inline GruGrad<T> gru_grad(const GruGates<T>& a, const T& rn, const T& h_prev, const T& mask,
                                           const T& dh) {
  const T one = one_like<T>();
  const T dxn = dh * (one - a.z) * mask * (one - a.n * a.n);
  const T dxz = dh * (h_prev - a.n * mask) * a.z * (one - a.z);
  const T dxr = dxn * rn * a.r * (one - a.r);
  return {dxr, dxz, dxn, dxn * a.r, dh * a.z};
}

// Elman RNN: the candidate, and its argument's gradient from the candidate's.
template <Cell C, typename T>
C10_HOST_DEVICE inline T rnn_candidate(const T& z) {
  if constexpr (C == Cell::kRnnTanh) {
    return cell_tanh(z);
  } else {
    return activation<Act::kRelu, 0>(z, z);
  }
}

template <Cell C, typename T>
C10_HOST_DEVICE inline T rnn_grad(const T& candidate, const T& dh) {
  using S = typename scalar_of<T>::type;
  const T zero(S(0)), one(S(1));
  if constexpr (C == Cell::kRnnTanh) {
    return dh * (one - candidate * candidate);
  } else {
    return dh * select(candidate > zero, one, zero);  // relu'(0) = 0, as torch
  }
}

// Layer norm of a row: xhat = (v - mean) * rstd; out = xhat * weight + bias. Backward, with
// the row means of dxhat = dout * weight and of dxhat * xhat:
//   dv = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
template <typename T>
C10_HOST_DEVICE inline T layer_norm_grad(const T& dxhat, const T& xhat, const T& rstd, const T& mean_dxhat,
                                         const T& mean_dxhat_xhat) {
  return rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
}

// ---- what the kernels of one step read and write (raw pointers; U = op-math type) ----

struct RnnParams {  // per call
  RnnShape shape;
  const int64_t* lengths = nullptr;                      // [B] on the data's device, or null
  const void* bias_hh = nullptr;                         // U[G] or null (never with norm_h)
  const void* norm_h_weight = nullptr;                   // U[G] (with norm_h_bias) or null
  const void* norm_h_bias = nullptr;
  const void* norm_c_weight = nullptr;                   // U[H] (with norm_c_bias), lstm
  const void* norm_c_bias = nullptr;
  double eps = 1e-5;
};

struct RnnForwardStep {
  int64_t step = 0;
  const void* xproj = nullptr;       // [T, B, G] scalar
  const void* pre = nullptr;         // [B, G] scalar: h[s] @ weight_hh.T
  const void* h_prev = nullptr;      // [B, P] scalar (states[s])
  void* h_next = nullptr;            // [B, P] scalar (states[s + 1])
  const void* c_prev = nullptr;      // [B, H] U, lstm
  void* c_next = nullptr;
  void* work = nullptr;              // [B, W] U (work[s])
  void* candidate = nullptr;         // [B, H] U: h~ (or o * u with a projection, whose product is h~)
  const void* zoneout_h = nullptr;   // [B, P] U (step s) or null
  const void* zoneout_c = nullptr;   // [B, H] U or null
  const void* mask = nullptr;        // [B, H] U candidate mask or null
};

struct RnnBackwardStep {
  int64_t step = 0;
  const void* grad_h_next = nullptr;  // [B, P] scalar: d states[s + 1]
  const void* grad_c_next = nullptr;  // [B, H] U: d cells[s + 1], or null
  const void* gemm_h = nullptr;       // [B, P] scalar: d pre[s + 1] @ weight_hh, or null at the last step
  void* carry_h = nullptr;            // [B, P] U: the rest of d states[s + 1]; on exit that of d states[s]
  void* carry_c = nullptr;            // [B, H] U: d cells[s + 1] from later steps; on exit d cells[s]
  void* d_candidate = nullptr;        // [B, P] U: d h~ (state_backward writes, cell_backward reads
  const void* d_hidden = nullptr;     //   it, or d_hidden [B, H] U, d (o * u), with a projection)
  const void* h_prev = nullptr;       // [B, P] scalar (states[s]), gru
  const void* c_prev = nullptr;       // [B, H] U (cells[s]), lstm
  const void* work = nullptr;         // [B, W] U (work[s])
  void* dxproj = nullptr;             // [T, B, G] scalar, written at time time_at(s, b)
  void* dpre = nullptr;               // [B, G] scalar: d pre (after the recurrent layer norm's backward)
  void* drec = nullptr;               // [B, G] U: d of the normalized recurrent part, norm_h only
  void* dc_hat = nullptr;             // [B, H] U: d of the cell layer norm's output, norm_c only
  const void* zoneout_h = nullptr;
  const void* zoneout_c = nullptr;
  const void* mask = nullptr;
};

// Calls f with the cell as a compile-time constant (the kernels are instantiated per cell).
template <typename F>
void dispatch_cell(Cell cell, F&& f) {
  switch (cell) {
    case Cell::kLstm: return f(std::integral_constant<Cell, Cell::kLstm>{});
    case Cell::kGru: return f(std::integral_constant<Cell, Cell::kGru>{});
    case Cell::kRnnTanh: return f(std::integral_constant<Cell, Cell::kRnnTanh>{});
    case Cell::kRnnRelu: return f(std::integral_constant<Cell, Cell::kRnnRelu>{});
  }
}

// The dtypes every rnn kernel takes, with scalar_t bound in the body.
#define MEDKERN_RNN_DISPATCH(dtype, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::rnn_sequence", __VA_ARGS__)

// The kernels a device provides (csrc/rnn_op.cpp runs the steps and the GEMMs between them).
struct RnnKernels {
  // gates, c[s + 1], work[s] and the candidate of every running sequence (finished ones:
  // c[s + 1] = c[s], work and candidate rows zero)
  void (*cell_forward)(at::ScalarType dtype, const RnnParams& p, const RnnForwardStep& st);
  // h[s + 1] = zoneout of h[s] and the candidate (h[s] for finished sequences)
  void (*state_forward)(at::ScalarType dtype, const RnnParams& p, const RnnForwardStep& st);
  // d h~ and the zoneout part of d h[s], from d h[s + 1]
  void (*state_backward)(at::ScalarType dtype, const RnnParams& p, const RnnBackwardStep& st);
  // dxproj, dpre (and drec, dc_hat) of step s, d c[s], and the direct part of d h[s] (gru)
  void (*cell_backward)(at::ScalarType dtype, const RnnParams& p, const RnnBackwardStep& st);
  // the GEMMs with the recurrent weights, prepared once per sequence (nullptr: at::mm_out)
  FixedRightGemmPlanner plan_gemm = nullptr;
  // a.T @ b for a (K, M) and b (K, N): weight_hh's gradient over every step (nullptr: at::mm)
  at::Tensor (*transposed_product)(const at::Tensor& a, const at::Tensor& b) = nullptr;
};

}  // namespace medkern
