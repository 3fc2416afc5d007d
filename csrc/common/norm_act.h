#pragma once
// norm_act's per-element math, shared by the CPU and CUDA kernels. Everything per channel or
// per statistics group is folded beforehand (csrc/common/norm_act_tables.h) into per-(sample,
// channel) coefficients, so an element needs only its own (n, c) entry of each table:
//
//   forward:   y = act(x * scale + shift)             scale = rstd * gamma,  shift = beta - mean * scale
//   backward:  xhat = u * xs + xo                     u = x (xs = rstd, xo = -mean * rstd), or
//                                                     u = act^-1(y) (xs = 1 / gamma, xo = -beta / gamma)
//              dpre = g * act'(z)                     z = x * scale + shift, or act' from y
//              sums per (n, c): dpre, dpre * xhat     (-> dbeta, dgamma and the group means below)
//              dx = k1 * dpre + k2 * xhat + k3        k1 = gamma * rstd, k2 = -rstd * mean_g(dxhat * xhat),
//                                                     k3 = -rstd * mean_g(dxhat), both 0 with running stats
//
// medkern/reference/norm_act.py derives these formulas.

#include <algorithm>
#include <cstdint>

#include "activations.h"

namespace medkern {

enum class NormKind : int { kBatch = 0, kInstance = 1, kGroup = 2 };

// The tensor as N samples of C channels of S positions, in memory as [N, C, S] ("planar",
// contiguous) or [N, S, C] ("interleaved", channels_last). Statistics are reduced in segments
// of `segment` positions of one (n, c), in a split fixed by the shape alone, so results do
// not depend on the number of threads.
struct NormShape {
  int64_t n;
  int64_t c;
  int64_t s;
  bool interleaved;
  int64_t segment;

  C10_HOST_DEVICE int64_t segments() const { return s == 0 ? 0 : (s + segment - 1) / segment; }
};

// Positions per segment: kNormSegment elements' worth (kNormRowBlockCpu's when interleaved on
// CPU), whole rows when interleaved. A segment is one task of every kernel (partial sums are per
// segment), small enough to stay in cache between a kernel's passes over it.
constexpr int64_t kNormSegment = 4096;
// The CPU's interleaved segments are bigger: a [rows, C] block summed down its columns stays in
// L2 between passes, and fewer segments leave fewer partial sums for the per-channel reductions,
// whose serial chains cost more than the kernels on small layers. CUDA keeps kNormSegment: a
// segment is a thread block there, and bigger ones would leave multiprocessors idle.
constexpr int64_t kNormRowBlockCpu = 32768;

inline NormShape make_norm_shape(int64_t n, int64_t c, int64_t s, bool interleaved, bool cuda) {
  const int64_t elements = cuda ? kNormSegment : kNormRowBlockCpu;
  const int64_t segment = interleaved && c > 0 ? std::max<int64_t>(1, elements / c) : kNormSegment;
  return {n, c, s, interleaved, segment};
}

// The backward's per-(n, c) tables (N * C entries each, in the op-math type).
template <typename U>
struct NormGradTables {
  const U* xs;
  const U* xo;
  const U* scale;  // forward's scale and shift, to recompute z from x (unused from the output)
  const U* shift;
  const U* k1;
  const U* k2;
  const U* k3;
};

template <Act A, typename T>
C10_HOST_DEVICE inline T norm_act_forward(const T& x, const T& scale, const T& shift, const T& alpha) {
  return activation<A, 0>(x * scale + shift, alpha);
}

// (dpre, xhat) of one element from the incoming gradient g and the saved tensor s, which is y
// when FromOutput, else x.
template <Act A, bool FromOutput, typename T>
C10_HOST_DEVICE inline void norm_act_grad_terms(const T& g, const T& s, const T& xs, const T& xo, const T& scale,
                                                const T& shift, const T& alpha, T& dpre, T& xhat) {
  if constexpr (FromOutput) {
    xhat = activation_inverse<A>(s, alpha) * xs + xo;
    dpre = g * activation_derivative_from_output<A>(s, alpha);
  } else {
    xhat = s * xs + xo;
    dpre = g * activation<A, 1>(s * scale + shift, alpha);
  }
}

template <typename T>
C10_HOST_DEVICE inline T norm_act_grad_input(const T& dpre, const T& xhat, const T& k1, const T& k2, const T& k3) {
  return dpre * k1 + xhat * k2 + k3;
}

}  // namespace medkern
