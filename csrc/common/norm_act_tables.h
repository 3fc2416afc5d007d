#pragma once
// norm_act's per-group, per-(n, c) and per-channel math between the streaming kernels, shared
// by the CPU (a loop over the entries) and CUDA (one thread per entry). An entry writes only its
// own outputs and sums in a fixed order, so results do not depend on the device's parallelism.
// Sums and coefficients are computed in double and per-group intermediates kept in double: the
// tables are small, and combining thousands of partial sums in float would lose digits. mean and
// var, the op's outputs, are rounded to U, and both the forward and the backward fold the rounded
// values, so their coefficients agree bit for bit.
//
// The steps, in the order the op runs them (formulas: csrc/common/norm_act.h):
//   kStatistics     per group:   mean and biased variance from the [N, C, K] segment moments
//   kInvStd         per group:   rstd = 1 / sqrt(var + eps)
//   kForward        per plane:   scale, shift
//   kGrad           per plane:   the backward's scale, shift (k1 = scale), xs, xo; k2 = k3 = 0
//   kGradParameters per channel: dweight, dbias from the [N, C, K] gradient sums
//   kGradGroups     per group:   the group means of dxhat and dxhat * xhat from the same sums
//   kGradFinish     per plane:   k2, k3 from the group means
// A group is a statistics group, or a channel when the running statistics are used
// (`per_channel`). Per-plane steps write the [N * C] tables in memory order: per-group writes
// down a column of the [N, C] tables thrash the cache when C is a power of two.

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

#include "norm_act.h"

namespace medkern {

// Statistics groups in all: a channel (batch norm), an (n, c) (instance), an (n, group) (group).
C10_HOST_DEVICE inline int64_t norm_group_total(NormKind kind, const NormShape& shape, int64_t groups) {
  if (kind == NormKind::kBatch) return shape.c;
  return shape.n * (kind == NormKind::kInstance ? shape.c : groups);
}

// Planes an entry of a reduction step sums over: `count` planes, the j-th is plane
// first + j * stride (n * C + c) of channel first_channel + j * channel_stride.
struct NormPlanes {
  int64_t count;
  int64_t first;
  int64_t stride;
  int64_t first_channel;
  int64_t channel_stride;
};

enum class NormTableStep : int { kStatistics, kInvStd, kForward, kGrad, kGradParameters, kGradGroups, kGradFinish };

// Every table of one call. Pointers a step does not use may be null.
template <typename U>
struct NormTableView {
  NormShape shape;
  NormKind kind;
  int64_t groups;  // group norm's groups per sample, else 1
  bool per_channel;
  bool from_output;  // backward recovers xhat from y
  double eps;
  const U* gamma;  // [C] or null (1)
  const U* beta;   // [C] or null (0)
  U* mean;  // per group: [group_total()] each (the op's outputs)
  U* var;
  double* rstd;  // per group, in double: the intermediate results stay exact until the tables
  double* group_dxhat;
  double* group_dxhat_xhat;
  const U* part_a;  // [N, C, K]: segment means (forward), sums of dpre (backward)
  const U* part_b;  // [N, C, K]: segment squared deviations (forward), sums of dpre * xhat (backward)
  U* scale;         // per plane: [N * C] each
  U* shift;
  U* xs;
  U* xo;
  U* k2;
  U* k3;
  U* dgamma;  // [C] or null
  U* dbeta;   // [C] or null

  C10_HOST_DEVICE int64_t segments() const { return shape.segments(); }
  C10_HOST_DEVICE NormKind group_kind() const { return per_channel ? NormKind::kBatch : kind; }
  C10_HOST_DEVICE int64_t group_total() const { return norm_group_total(group_kind(), shape, groups); }
  // The planes group g's statistics cover, and those of channel c (dweight and dbias).
  C10_HOST_DEVICE NormPlanes group_planes(int64_t g) const {
    const NormKind k = group_kind();
    if (k == NormKind::kBatch) return channel_planes(g);
    if (k == NormKind::kInstance) return {1, g, 0, g % shape.c, 0};
    const int64_t per = shape.c / groups, c0 = (g % groups) * per;
    return {per, (g / groups) * shape.c + c0, 1, c0, 1};
  }
  C10_HOST_DEVICE NormPlanes channel_planes(int64_t c) const { return {shape.n, c, shape.c, c, 0}; }
  // The group of plane (n, c).
  C10_HOST_DEVICE int64_t group_of(int64_t n, int64_t c) const {
    const NormKind k = group_kind();
    if (k == NormKind::kBatch) return c;
    if (k == NormKind::kInstance) return n * shape.c + c;
    return n * groups + c / (shape.c / groups);
  }
  // Elements per group: every group has as many planes as group 0.
  C10_HOST_DEVICE double group_count() const {
    return static_cast<double>(group_planes(0).count) * static_cast<double>(shape.s);
  }
  C10_HOST_DEVICE double segment_count(int64_t k) const {
    const int64_t begin = k * shape.segment;
    return static_cast<double>(shape.s - begin < shape.segment ? shape.s - begin : shape.segment);
  }
  C10_HOST_DEVICE double gamma_of(int64_t c) const { return gamma ? static_cast<double>(gamma[c]) : 1.0; }
  C10_HOST_DEVICE double beta_of(int64_t c) const { return beta ? static_cast<double>(beta[c]) : 0.0; }
};

// The reduction steps (kStatistics, kGradParameters, kGradGroups) sum over an entry's members,
// its [N, C, K] partials, in `lanes` interleaved parts: lane l takes members l, l + lanes, ...
// The CPU runs one lane; CUDA runs a block's threads as lanes and adds their parts with a
// fixed-order block sum, then lane 0 writes the entry (the *_write functions).

// Calls f(partial, segment, channel) for lane's members of `planes` (member j * K + k is segment k
// of plane j): lane, lane + lanes, ... It steps without dividing, which would cost more than
// the sums when segments are few.
template <typename U, typename F>
C10_HOST_DEVICE inline void norm_for_lane_members(const NormTableView<U>& v, const NormPlanes& planes, int64_t lane,
                                                  int64_t lanes, const F& f) {
  const int64_t k_count = v.segments();
  if (k_count == 0) return;
  const int64_t dj = lanes / k_count, dk = lanes % k_count;
  for (int64_t j = lane / k_count, k = lane % k_count; j < planes.count;) {
    f((planes.first + j * planes.stride) * k_count + k, k, planes.first_channel + j * planes.channel_stride);
    j += dj;
    k += dk;
    if (k >= k_count) {
      k -= k_count;
      ++j;
    }
  }
}

// Group g's mean and variance combine its segments exactly (Chan et al.): the mean of the
// segment means weighted by their counts (first sum), then each segment's squared deviations
// plus its count times its mean's squared distance from the group mean (second sum). The terms
// of member `at` (segment k) are separate functions so a host summing many channels side by side
// (csrc/cpu/norm_act_kernel.cpp) adds the very same terms.
template <typename U>
C10_HOST_DEVICE inline double norm_statistics_sum_term(const NormTableView<U>& v, int64_t at, int64_t k) {
  return v.segment_count(k) * static_cast<double>(v.part_a[at]);
}

template <typename U>
C10_HOST_DEVICE inline double norm_statistics_m2_term(const NormTableView<U>& v, int64_t at, int64_t k, double mean) {
  const double d = static_cast<double>(v.part_a[at]) - mean;
  return static_cast<double>(v.part_b[at]) + v.segment_count(k) * d * d;
}

template <typename U>
C10_HOST_DEVICE inline double norm_statistics_sum(const NormTableView<U>& v, int64_t g, int64_t lane, int64_t lanes) {
  double sum = 0;
  norm_for_lane_members(v, v.group_planes(g), lane, lanes,
                        [&](int64_t at, int64_t k, int64_t) { sum += norm_statistics_sum_term(v, at, k); });
  return sum;
}

template <typename U>
C10_HOST_DEVICE inline double norm_statistics_m2(const NormTableView<U>& v, int64_t g, double mean, int64_t lane,
                                                 int64_t lanes) {
  double m2 = 0;
  norm_for_lane_members(v, v.group_planes(g), lane, lanes,
                        [&](int64_t at, int64_t k, int64_t) { m2 += norm_statistics_m2_term(v, at, k, mean); });
  return m2;
}

template <typename U>
C10_HOST_DEVICE inline void norm_statistics_write(const NormTableView<U>& v, int64_t g, double mean, double m2) {
  v.mean[g] = static_cast<U>(mean);
  v.var[g] = static_cast<U>(m2 / v.group_count());
}

template <typename U>
C10_HOST_DEVICE inline void norm_inv_std(const NormTableView<U>& v, int64_t g) {
  v.rstd[g] = 1.0 / ::sqrt(static_cast<double>(v.var[g]) + v.eps);
}

// Plane nc's forward scale and shift (and, for the backward, xs and xo, with k2 = k3 = 0: their
// value with the running statistics; kGradFinish sets them for batch statistics).
template <typename U, bool Backward>
C10_HOST_DEVICE inline void norm_plane_coefficients(const NormTableView<U>& v, int64_t n, int64_t c) {
  const int64_t nc = n * v.shape.c + c, g = v.group_of(n, c);
  const double rstd = v.rstd[g], mean = static_cast<double>(v.mean[g]);
  const double gamma = v.gamma_of(c), beta = v.beta_of(c), scale = rstd * gamma;
  v.scale[nc] = static_cast<U>(scale);
  v.shift[nc] = static_cast<U>(beta - mean * scale);
  if constexpr (Backward) {
    v.xs[nc] = static_cast<U>(v.from_output ? 1.0 / gamma : rstd);
    v.xo[nc] = static_cast<U>(v.from_output ? -beta / gamma : -mean * rstd);
    v.k2[nc] = U(0);
    v.k3[nc] = U(0);
  }
}

// The gradient sums' terms of member `at` of channel c: dpre and dpre * xhat (kGradParameters,
// -> dbias and dweight), or dxhat = dpre * gamma and dxhat * xhat (kGradGroups).
template <typename U>
C10_HOST_DEVICE inline void norm_grad_terms(const NormTableView<U>& v, NormTableStep step, int64_t at, int64_t c,
                                            double& a, double& b) {
  const double gamma = step == NormTableStep::kGradGroups ? v.gamma_of(c) : 1.0;
  a = static_cast<double>(v.part_a[at]) * gamma;
  b = static_cast<double>(v.part_b[at]) * gamma;
}

// Channel c's sums of dpre (-> dbias) and dpre * xhat (-> dweight) over every sample and segment.
template <typename U>
C10_HOST_DEVICE inline void norm_channel_grad_sums(const NormTableView<U>& v, int64_t c, int64_t lane, int64_t lanes,
                                                   double& a, double& b) {
  a = b = 0;
  norm_for_lane_members(v, v.channel_planes(c), lane, lanes, [&](int64_t at, int64_t, int64_t) {
    double ta, tb;
    norm_grad_terms(v, NormTableStep::kGradParameters, at, c, ta, tb);
    a += ta;
    b += tb;
  });
}

template <typename U>
C10_HOST_DEVICE inline void norm_grad_parameters_write(const NormTableView<U>& v, int64_t c, double a, double b) {
  if (v.dbeta) v.dbeta[c] = static_cast<U>(a);
  if (v.dgamma) v.dgamma[c] = static_cast<U>(b);
}

// Group g's sums of dxhat = dpre * gamma and of dxhat * xhat.
template <typename U>
C10_HOST_DEVICE inline void norm_group_grad_sums(const NormTableView<U>& v, int64_t g, int64_t lane, int64_t lanes,
                                                 double& a, double& b) {
  a = b = 0;
  norm_for_lane_members(v, v.group_planes(g), lane, lanes, [&](int64_t at, int64_t, int64_t c) {
    double ta, tb;
    norm_grad_terms(v, NormTableStep::kGradGroups, at, c, ta, tb);
    a += ta;
    b += tb;
  });
}

template <typename U>
C10_HOST_DEVICE inline void norm_grad_group_means_write(const NormTableView<U>& v, int64_t g, double a, double b) {
  v.group_dxhat[g] = a / v.group_count();
  v.group_dxhat_xhat[g] = b / v.group_count();
}

// Plane nc's k2 = -rstd * mean(dxhat * xhat) and k3 = -rstd * mean(dxhat) of its group.
template <typename U>
C10_HOST_DEVICE inline void norm_grad_finish(const NormTableView<U>& v, int64_t n, int64_t c) {
  const int64_t nc = n * v.shape.c + c, g = v.group_of(n, c);
  v.k2[nc] = static_cast<U>(-v.rstd[g] * v.group_dxhat_xhat[g]);
  v.k3[nc] = static_cast<U>(-v.rstd[g] * v.group_dxhat[g]);
}

// Entry i's results of a gradient reduction step from its sums.
template <typename U>
C10_HOST_DEVICE inline void norm_grad_sums_write(const NormTableView<U>& v, NormTableStep step, int64_t i, double a,
                                                 double b) {
  if (step == NormTableStep::kGradParameters) {
    norm_grad_parameters_write(v, i, a, b);
  } else {
    norm_grad_group_means_write(v, i, a, b);
  }
}

C10_HOST_DEVICE inline bool norm_table_per_plane(NormTableStep step) {
  return step == NormTableStep::kForward || step == NormTableStep::kGrad || step == NormTableStep::kGradFinish;
}

C10_HOST_DEVICE inline bool norm_table_reduces(NormTableStep step) {
  return step == NormTableStep::kStatistics || step == NormTableStep::kGradParameters ||
         step == NormTableStep::kGradGroups;
}

// Whether a reduction step's entry i is channel i, summing the [N, C, K] partials of that channel
// (dweight and dbias always; the statistics and group means when the groups are channels).
template <typename U>
C10_HOST_DEVICE inline bool norm_table_entries_are_channels(const NormTableView<U>& v, NormTableStep step) {
  return step == NormTableStep::kGradParameters || v.group_kind() == NormKind::kBatch;
}

// The [N * C] tables a per-plane step writes, in `out` (at most 6); returns how many. With
// channel groups (group_kind() kBatch) every sample's row of them is the same.
template <typename U>
C10_HOST_DEVICE inline int norm_plane_outputs(const NormTableView<U>& v, NormTableStep step, U** out) {
  if (step == NormTableStep::kForward) {
    out[0] = v.scale;
    out[1] = v.shift;
    return 2;
  }
  out[0] = v.k2;
  out[1] = v.k3;
  if (step == NormTableStep::kGradFinish) return 2;
  out[2] = v.scale;
  out[3] = v.shift;
  out[4] = v.xs;
  out[5] = v.xo;
  return 6;
}

// Entries of `step`: what a device's loop or grid covers.
template <typename U>
C10_HOST_DEVICE inline int64_t norm_table_entries(const NormTableView<U>& v, NormTableStep step) {
  if (norm_table_per_plane(step)) return v.shape.n * v.shape.c;
  return step == NormTableStep::kGradParameters ? v.shape.c : v.group_total();
}

// Plane (n, c)'s entry of a per-plane step (a host walks n and c without dividing).
template <typename U>
C10_HOST_DEVICE inline void norm_plane_entry(const NormTableView<U>& v, NormTableStep step, int64_t n, int64_t c) {
  if (step == NormTableStep::kForward) {
    norm_plane_coefficients<U, false>(v, n, c);
  } else if (step == NormTableStep::kGrad) {
    norm_plane_coefficients<U, true>(v, n, c);
  } else {
    norm_grad_finish(v, n, c);
  }
}

// Entry i of a reduction step, as lane `lane` of `lanes`; sum(part) returns the sum of a part
// over all lanes (the identity with one lane).
template <typename U, typename Sum>
C10_HOST_DEVICE inline void norm_reduction_entry(const NormTableView<U>& v, NormTableStep step, int64_t i,
                                                 int64_t lane, int64_t lanes, const Sum& sum) {
  if (step == NormTableStep::kStatistics) {
    const double mean = sum(norm_statistics_sum(v, i, lane, lanes)) / v.group_count();
    const double m2 = sum(norm_statistics_m2(v, i, mean, lane, lanes));
    if (lane == 0) norm_statistics_write(v, i, mean, m2);
    return;
  }
  double a, b;
  if (step == NormTableStep::kGradParameters) {
    norm_channel_grad_sums(v, i, lane, lanes, a, b);
  } else {
    norm_group_grad_sums(v, i, lane, lanes, a, b);
  }
  a = sum(a);
  b = sum(b);
  if (lane == 0) norm_grad_sums_write(v, step, i, a, b);
}

struct NormOneLane {
  C10_HOST_DEVICE double operator()(double part) const { return part; }
};

// Entry i of a step that is neither per plane nor a reduction (kInvStd), or of any step by one
// lane: what a host runs.
template <typename U>
C10_HOST_DEVICE inline void norm_table_entry(const NormTableView<U>& v, NormTableStep step, int64_t i) {
  if (norm_table_per_plane(step)) {
    norm_plane_entry(v, step, i / v.shape.c, i % v.shape.c);
  } else if (norm_table_reduces(step)) {
    norm_reduction_entry(v, step, i, 0, 1, NormOneLane{});
  } else {
    norm_inv_std(v, i);
  }
}

}  // namespace medkern
