// CPU kernels of medkern::norm_act (csrc/common/norm_act_kernels.h), compiled once per CPU
// capability like bias_act_kernel.cpp. Raw pointers only.
//
// Every kernel walks the same tasks: one segment of one (n, c) plane (planar layout: a
// contiguous run, its coefficients scalars) or one segment of rows of one sample (interleaved
// layout: each row holds all C channels, its coefficients vectors read from the tables).
// Reductions write one partial sum per (n, c, segment), so no two tasks share an output and the
// results do not depend on the number of threads; an interleaved segment is one [rows, C] block,
// summed down its columns in registers. The math is csrc/common/norm_act.h and
// norm_act_tables.h.

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common/norm_act_kernels.h"
#include "vec_io.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

// A run of elements whose coefficients are one (n, c)'s (planar: broadcast) or a row's C
// channels (interleaved: loaded lane by lane).
template <bool Rows, typename U>
inline Vec<U> coef(const U* table, int64_t i, int64_t m) {
  if constexpr (Rows) {
    return Vec<U>::loadu(table + i, m);
  } else {
    return Vec<U>(*table);
  }
}

// Calls run(offset, length, table_index, first_channel) for each run of segment `task`:
// table_index is where the run's coefficients start in an [N * C] table.
template <typename Run>
void for_each_run(const NormShape& sh, int64_t task, Run&& run) {
  const int64_t k_count = sh.segments();
  if (!sh.interleaved) {
    const int64_t plane = task / k_count, k = task % k_count;
    const int64_t begin = k * sh.segment, len = std::min(sh.segment, sh.s - begin);
    run(plane * sh.s + begin, len, plane);
  } else {
    const int64_t n = task / k_count, k = task % k_count;
    const int64_t row_end = std::min(sh.s, (k + 1) * sh.segment);
    for (int64_t r = k * sh.segment; r < row_end; ++r) run((n * sh.s + r) * sh.c, sh.c, n * sh.c);
  }
}

int64_t task_count(const NormShape& sh) { return (sh.interleaved ? sh.n : sh.n * sh.c) * sh.segments(); }

// Elements of the largest segment: a [rows, C] block when interleaved, else a run.
int64_t max_block(const NormShape& sh) { return std::min(sh.segment, sh.s) * (sh.interleaved ? sh.c : 1); }

// Tasks per thread at least: inputs under ~32K elements run on the calling thread, since an
// OpenMP region costs more than they do (and much more when another process holds a core).
int64_t task_grain(const NormShape& sh) {
  const int64_t task_elements = std::max<int64_t>(1, max_block(sh));
  return std::max<int64_t>(1, (int64_t{1} << 15) / task_elements);
}

int64_t max_run(const NormShape& sh) { return sh.interleaved ? sh.c : std::min(sh.segment, sh.s); }

// v with its lanes past m zeroed (a run's last, partial vector).
template <typename U>
inline Vec<U> masked(const Vec<U>& v, int64_t m) {
  return m == Vec<U>::size() ? v : Vec<U>::set(Vec<U>(U(0)), v, m);
}

// Segment `task` of an interleaved tensor: rows [first, first + rows) of one sample, a contiguous
// [rows, C] block at `offset`, whose coefficients start at `table` in an [N * C] table.
struct RowBlock {
  int64_t offset;
  int64_t rows;
  int64_t table;
};

inline RowBlock row_block(const NormShape& sh, int64_t task) {
  const int64_t n = task / sh.segments(), first = (task % sh.segments()) * sh.segment;
  return {(n * sh.s + first) * sh.c, std::min(sh.s, first + sh.segment) - first, n * sh.c};
}

// A buffer for a block converted to the op-math type, empty where no conversion is needed.
template <typename U, typename scalar_t>
std::vector<U> opmath_buffer(int64_t n) {
  return std::vector<U>(std::is_same_v<U, scalar_t> ? 0 : n);
}

// The sum of f(r) over rows r in [0, rows), in four accumulators (rows r, r + 1, r + 2, r + 3 of
// each group of four) added pairwise at the end: an interleaved block is summed down its columns
// in registers, where one accumulator in memory updated row by row would make every row wait for
// the previous row's store, and one in a register for the previous row's add.
template <typename Acc, typename F>
inline Acc sum_rows(int64_t rows, const Acc& zero, const F& f) {
  Acc s0 = zero, s1 = zero, s2 = zero, s3 = zero;
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    s0 = s0 + f(r);
    s1 = s1 + f(r + 1);
    s2 = s2 + f(r + 2);
    s3 = s3 + f(r + 3);
  }
  for (; r < rows; ++r) s0 = s0 + f(r);
  return (s0 + s1) + (s2 + s3);
}

// Two sums at once (the backward's dpre and dpre * xhat).
template <typename U>
struct VecPair {
  Vec<U> a, b;
  VecPair operator+(const VecPair& o) const { return {a + o.a, b + o.b}; }
};

// Writes lanes [0, m) of v, channels i..i + m of interleaved segment `task` (sample n, segment k),
// into an [N, C, K] partial table. (A planar task, (n * C + c) * K + k, is its own index there.)
template <typename U>
inline void store_partials(const NormShape& sh, int64_t task, int64_t i, int64_t m, const Vec<U>& v, U* out) {
  U lanes[Vec<U>::size()];
  v.store(lanes);
  const int64_t k_count = sh.segments(), n = task / k_count, k = task % k_count;
  U* first = out + (n * sh.c + i) * k_count + k;  // channel i + j at first[j * K]
  for (int64_t j = 0; j < m; ++j) first[j * k_count] = lanes[j];
}

// Planar segment `task`, one (n, c, segment): its mean, then its squared deviations from it while
// the segment is still in cache (exact for any offset, unlike a sum of squares).
template <typename scalar_t, typename U = at::opmath_type<scalar_t>>
void plane_moments(const scalar_t* x, const NormShape& sh, int64_t task, U* buf, U* mean_out, U* m2_out) {
  using V = Vec<U>;
  V acc(U(0)), acc2(U(0));
  int64_t count = 0;
  for_each_run(sh, task, [&](int64_t off, int64_t len, int64_t) {
    const U* v = load_opmath(x + off, len, buf);
    for (int64_t i = 0; i < len; i += V::size()) {
      const int64_t m = std::min<int64_t>(V::size(), len - i);
      acc = acc + masked(V::loadu(v + i, m), m);
    }
    count += len;
  });
  const U run_mean = sum_lanes(acc) / static_cast<U>(count);
  for_each_run(sh, task, [&](int64_t off, int64_t len, int64_t) {
    const U* v = load_opmath(x + off, len, buf);
    for (int64_t i = 0; i < len; i += V::size()) {
      const int64_t m = std::min<int64_t>(V::size(), len - i);
      const V d = V::loadu(v + i, m) - V(run_mean);
      acc2 = acc2 + masked(d * d, m);
    }
  });
  mean_out[task] = run_mean;
  m2_out[task] = sum_lanes(acc2);
}

// The same for interleaved segment `task`, every channel at once: each channel vector's column of
// the segment's [rows, C] block is summed in registers.
template <typename scalar_t, typename U = at::opmath_type<scalar_t>>
void row_block_moments(const scalar_t* x, const NormShape& sh, int64_t task, U* buf, U* mean_out, U* m2_out) {
  using V = Vec<U>;
  const RowBlock b = row_block(sh, task);
  const U* block = load_opmath(x + b.offset, b.rows * sh.c, buf);
  for (int64_t i = 0; i < sh.c; i += V::size()) {
    const int64_t m = std::min<int64_t>(V::size(), sh.c - i);
    const auto row = [&](int64_t r) { return V::loadu(block + r * sh.c + i, m); };
    const V mean = sum_rows(b.rows, V(U(0)), row) / V(static_cast<U>(b.rows));
    const V m2 = sum_rows(b.rows, V(U(0)), [&](int64_t r) {
      const V d = row(r) - mean;
      return d * d;
    });
    store_partials(sh, task, i, m, mean, mean_out);
    store_partials(sh, task, i, m, m2, m2_out);
  }
}

template <typename scalar_t, typename U = at::opmath_type<scalar_t>>
void moments_of(const scalar_t* x, const NormShape& sh, U* mean_out, U* m2_out) {
  at::parallel_for(0, task_count(sh), task_grain(sh), [&](int64_t begin, int64_t end) {
    std::vector<U> buf = opmath_buffer<U, scalar_t>(max_block(sh));
    for (int64_t task = begin; task < end; ++task) {
      if (sh.interleaved) {
        row_block_moments(x, sh, task, buf.data(), mean_out, m2_out);
      } else {
        plane_moments(x, sh, task, buf.data(), mean_out, m2_out);
      }
    }
  });
}

template <Act A, typename scalar_t, bool Rows>
void forward_rows(const scalar_t* x, const at::opmath_type<scalar_t>* scale, const at::opmath_type<scalar_t>* shift,
                  double alpha_d, const NormShape& sh, scalar_t* y) {
  using U = at::opmath_type<scalar_t>;
  using V = Vec<U>;
  const V alpha(static_cast<U>(alpha_d));
  at::parallel_for(0, task_count(sh), task_grain(sh), [&](int64_t begin, int64_t end) {
    std::vector<U> in(max_run(sh)), out(max_run(sh));
    for (int64_t task = begin; task < end; ++task) {
      for_each_run(sh, task, [&](int64_t off, int64_t len, int64_t t) {
        const U* v = load_opmath(x + off, len, in.data());
        U* o = out_opmath<U>(y + off, out.data());
        for (int64_t i = 0; i < len; i += V::size()) {
          const int64_t m = std::min<int64_t>(V::size(), len - i);
          norm_act_forward<A>(V::loadu(v + i, m), coef<Rows>(scale + t, i, m), coef<Rows>(shift + t, i, m), alpha)
              .store(o + i, m);
        }
        store_opmath(o, y + off, len);
      });
    }
  });
}

// Both backward kernels: computes dpre and xhat of every element and hands them to a copy of
// `prototype` per thread (start(task), element(...) per vector, end_run(...), finish(task)).
template <Act A, bool FromOutput, bool Rows, typename scalar_t, typename Use>
void grad_terms(const scalar_t* g, const scalar_t* saved, const NormGradTables<at::opmath_type<scalar_t>>& tb,
                double alpha_d, const NormShape& sh, const Use& prototype) {
  using U = at::opmath_type<scalar_t>;
  using V = Vec<U>;
  const V alpha(static_cast<U>(alpha_d));
  at::parallel_for(0, task_count(sh), task_grain(sh), [&](int64_t begin, int64_t end) {
    std::vector<U> gbuf(max_run(sh)), sbuf(max_run(sh));
    Use use(prototype);
    for (int64_t task = begin; task < end; ++task) {
      use.start(task);
      for_each_run(sh, task, [&](int64_t off, int64_t len, int64_t t) {
        const U* gv = load_opmath(g + off, len, gbuf.data());
        const U* sv = load_opmath(saved + off, len, sbuf.data());
        for (int64_t i = 0; i < len; i += V::size()) {
          const int64_t m = std::min<int64_t>(V::size(), len - i);
          V dpre, xhat;
          norm_act_grad_terms<A, FromOutput>(V::loadu(gv + i, m), V::loadu(sv + i, m), coef<Rows>(tb.xs + t, i, m),
                                             coef<Rows>(tb.xo + t, i, m), coef<Rows>(tb.scale + t, i, m),
                                             coef<Rows>(tb.shift + t, i, m), alpha, dpre, xhat);
          use.element(off, t, i, m, dpre, xhat);
        }
        use.end_run(off, len);
      });
      use.finish(task);
    }
  });
}

// Sums dpre and dpre * xhat per (n, c, segment) of a planar tensor (a Use of grad_terms).
template <typename U>
struct PlaneSums {
  U* sum_dpre;
  U* sum_dpre_xhat;
  Vec<U> av{U(0)}, bv{U(0)};

  void start(int64_t) { av = bv = Vec<U>(U(0)); }
  void element(int64_t, int64_t, int64_t, int64_t m, const Vec<U>& dpre, const Vec<U>& xhat) {
    av = av + masked(dpre, m);
    bv = bv + masked(dpre * xhat, m);
  }
  void end_run(int64_t, int64_t) {}
  void finish(int64_t task) {
    sum_dpre[task] = sum_lanes(av);
    sum_dpre_xhat[task] = sum_lanes(bv);
  }
};

// The same sums of an interleaved tensor: a segment's rows share their (n, c) coefficients, so
// each channel vector loads them once and sums its column of the block in registers.
template <Act A, bool FromOutput, typename scalar_t>
void row_block_sums(const scalar_t* g, const scalar_t* saved, const NormGradTables<at::opmath_type<scalar_t>>& tb,
                    double alpha_d, const NormShape& sh, at::opmath_type<scalar_t>* sum_dpre,
                    at::opmath_type<scalar_t>* sum_dpre_xhat) {
  using U = at::opmath_type<scalar_t>;
  using V = Vec<U>;
  const V alpha(static_cast<U>(alpha_d));
  at::parallel_for(0, task_count(sh), task_grain(sh), [&](int64_t begin, int64_t end) {
    std::vector<U> gbuf = opmath_buffer<U, scalar_t>(max_block(sh)), sbuf(gbuf.size());
    for (int64_t task = begin; task < end; ++task) {
      const RowBlock b = row_block(sh, task);
      const U* gv = load_opmath(g + b.offset, b.rows * sh.c, gbuf.data());
      const U* sv = load_opmath(saved + b.offset, b.rows * sh.c, sbuf.data());
      for (int64_t i = 0; i < sh.c; i += V::size()) {
        const int64_t m = std::min<int64_t>(V::size(), sh.c - i), t = b.table + i;
        const V xs = V::loadu(tb.xs + t, m), xo = V::loadu(tb.xo + t, m);
        const V scale = V::loadu(tb.scale + t, m), shift = V::loadu(tb.shift + t, m);
        const VecPair<U> sums = sum_rows(b.rows, VecPair<U>{V(U(0)), V(U(0))}, [&](int64_t r) {
          V dpre, xhat;
          norm_act_grad_terms<A, FromOutput>(V::loadu(gv + r * sh.c + i, m), V::loadu(sv + r * sh.c + i, m), xs, xo,
                                             scale, shift, alpha, dpre, xhat);
          return VecPair<U>{dpre, dpre * xhat};
        });
        store_partials(sh, task, i, m, sums.a, sum_dpre);
        store_partials(sh, task, i, m, sums.b, sum_dpre_xhat);
      }
    }
  });
}

// Writes dx = k1 * dpre + k2 * xhat + k3.
template <bool Rows, typename scalar_t>
struct WriteInputGrad {
  using U = at::opmath_type<scalar_t>;
  const NormGradTables<U>& tb;
  scalar_t* dx;
  std::vector<U> out;

  WriteInputGrad(const NormGradTables<U>& t, scalar_t* d, int64_t run) : tb(t), dx(d), out(run) {}
  WriteInputGrad(const WriteInputGrad& o) : WriteInputGrad(o.tb, o.dx, static_cast<int64_t>(o.out.size())) {}

  void start(int64_t) {}
  void element(int64_t off, int64_t t, int64_t i, int64_t m, const Vec<U>& dpre, const Vec<U>& xhat) {
    U* o = out_opmath<U>(dx + off, out.data());
    norm_act_grad_input(dpre, xhat, coef<Rows>(tb.k1 + t, i, m), coef<Rows>(tb.k2 + t, i, m),
                        coef<Rows>(tb.k3 + t, i, m))
        .store(o + i, m);
  }
  void end_run(int64_t off, int64_t len) { store_opmath(out.data(), dx + off, len); }
  void finish(int64_t) {}
};

void moments(at::ScalarType dtype, const void* x, const NormShape& sh, void* mean, void* m2) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::norm_act", [&] {
    using U = at::opmath_type<scalar_t>;
    auto* xp = static_cast<const scalar_t*>(x);
    moments_of(xp, sh, static_cast<U*>(mean), static_cast<U*>(m2));
  });
}

void forward(at::ScalarType dtype, Act act, double alpha, const void* x, const void* scale, const void* shift,
             const NormShape& sh, void* y) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::norm_act", [&] {
    using U = at::opmath_type<scalar_t>;
    dispatch_act(act, [&](auto a) {
      constexpr Act A = decltype(a)::value;
      const auto* xp = static_cast<const scalar_t*>(x);
      const auto *sc = static_cast<const U*>(scale), *sf = static_cast<const U*>(shift);
      auto* yp = static_cast<scalar_t*>(y);
      if (sh.interleaved) {
        forward_rows<A, scalar_t, true>(xp, sc, sf, alpha, sh, yp);
      } else {
        forward_rows<A, scalar_t, false>(xp, sc, sf, alpha, sh, yp);
      }
    });
  });
}

void grad_sums(at::ScalarType dtype, Act act, double alpha, bool from_output, const void* g, const void* saved,
               const NormGradTables<void>& tables, const NormShape& sh, void* sum_dpre, void* sum_dpre_xhat) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::norm_act_backward", [&] {
    using U = at::opmath_type<scalar_t>;
    const auto tb = typed<U>(tables);
    const auto* gp = static_cast<const scalar_t*>(g);
    const auto* sp = static_cast<const scalar_t*>(saved);
    auto* s1 = static_cast<U*>(sum_dpre);
    auto* s2 = static_cast<U*>(sum_dpre_xhat);
    dispatch_norm_grad(act, from_output, [&]<Act A, bool FromOutput>() {
      if (sh.interleaved) {
        row_block_sums<A, FromOutput>(gp, sp, tb, alpha, sh, s1, s2);
      } else {
        grad_terms<A, FromOutput, false>(gp, sp, tb, alpha, sh, PlaneSums<U>{s1, s2});
      }
    });
  });
}

void grad_input(at::ScalarType dtype, Act act, double alpha, bool from_output, const void* g, const void* saved,
                const NormGradTables<void>& tables, const NormShape& sh, void* dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::norm_act_backward", [&] {
    using U = at::opmath_type<scalar_t>;
    const auto tb = typed<U>(tables);
    const auto* gp = static_cast<const scalar_t*>(g);
    const auto* sp = static_cast<const scalar_t*>(saved);
    auto* dxp = static_cast<scalar_t*>(dx);
    dispatch_norm_grad(act, from_output, [&]<Act A, bool FromOutput>() {
      if (sh.interleaved) {
        grad_terms<A, FromOutput, true>(gp, sp, tb, alpha, sh, WriteInputGrad<true, scalar_t>(tb, dxp, max_run(sh)));
      } else {
        grad_terms<A, FromOutput, false>(gp, sp, tb, alpha, sh, WriteInputGrad<false, scalar_t>(tb, dxp, max_run(sh)));
      }
    });
  });
}

// Channels one task of a channel reduction sums side by side.
constexpr int64_t kTableChannels = 64;

// Reduction step `step` for channels [c0, c0 + width) (norm_table_entries_are_channels). Each
// channel's members are summed in the one-lane order (sample, then segment), so its sums are
// norm_reduction_entry's bit for bit; but the block's channels take turns member by member, so
// their sums are independent chains that overlap instead of one long chain of double adds per
// channel, and the loads of a member are adjacent across the block.
template <typename U>
void channel_block_reduction(const NormTableView<U>& v, NormTableStep step, int64_t c0, int64_t width) {
  const int64_t k_count = v.segments();
  const auto for_members = [&](const auto& add) {
    for (int64_t n = 0; n < v.shape.n; ++n) {
      for (int64_t k = 0; k < k_count; ++k) {
        const int64_t first = (n * v.shape.c + c0) * k_count + k;
        for (int64_t j = 0; j < width; ++j) add(j, first + j * k_count, k);
      }
    }
  };
  double a[kTableChannels] = {}, b[kTableChannels] = {};
  if (step == NormTableStep::kStatistics) {
    for_members([&](int64_t j, int64_t at, int64_t k) { a[j] += norm_statistics_sum_term(v, at, k); });
    for (int64_t j = 0; j < width; ++j) a[j] /= v.group_count();  // the mean
    for_members([&](int64_t j, int64_t at, int64_t k) { b[j] += norm_statistics_m2_term(v, at, k, a[j]); });
    for (int64_t j = 0; j < width; ++j) norm_statistics_write(v, c0 + j, a[j], b[j]);
    return;
  }
  for_members([&](int64_t j, int64_t at, int64_t) {
    double ta, tb;
    norm_grad_terms(v, step, at, c0 + j, ta, tb);
    a[j] += ta;
    b[j] += tb;
  });
  for (int64_t j = 0; j < width; ++j) norm_grad_sums_write(v, step, c0 + j, a[j], b[j]);
}

// A per-plane step. With channel groups every sample's row of the [N, C] tables is the same, so
// sample 0's is computed and copied.
template <typename U>
void plane_tables(NormTableStep step, const NormTableView<U>& view) {
  const int64_t n_count = view.shape.n, c_count = view.shape.c;
  const bool same_rows = view.group_kind() == NormKind::kBatch;
  for (int64_t n = 0; n < (same_rows ? std::min<int64_t>(n_count, 1) : n_count); ++n) {
    for (int64_t c = 0; c < c_count; ++c) norm_plane_entry(view, step, n, c);
  }
  if (!same_rows) return;
  U* outputs[6];
  const int count = norm_plane_outputs(view, step, outputs);
  for (int i = 0; i < count; ++i) {
    for (int64_t n = 1; n < n_count; ++n) std::copy(outputs[i], outputs[i] + c_count, outputs[i] + n * c_count);
  }
}

// The tables are small (an entry per statistics group, (n, c) plane or channel): one thread
// walks them, cheaper than starting a parallel region, unless a reduction step's entries sum
// many partials (channels_last volumes have thousands of segments per plane).
template <typename U>
void tables(NormTableStep step, const NormTableView<U>& view) {
  if (norm_table_per_plane(step)) {
    plane_tables(step, view);
    return;
  }
  const int64_t entries = norm_table_entries(view, step);
  const int64_t partials = view.shape.n * view.shape.c * view.segments();
  const int64_t per_entry = std::max<int64_t>(1, partials / std::max<int64_t>(1, entries));
  const int64_t task_partials = int64_t{1} << 16;
  if (norm_table_reduces(step) && norm_table_entries_are_channels(view, step)) {
    const int64_t blocks = (entries + kTableChannels - 1) / kTableChannels;
    const int64_t grain = std::max<int64_t>(1, task_partials / (kTableChannels * per_entry));
    at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t c0 = i * kTableChannels;
        channel_block_reduction(view, step, c0, std::min(kTableChannels, entries - c0));
      }
    });
    return;
  }
  const int64_t grain = norm_table_reduces(step) ? task_partials / per_entry : entries;
  at::parallel_for(0, entries, std::max<int64_t>(1, grain), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) norm_table_entry(view, step, i);
  });
}

}  // namespace

NormActKernels norm_act_kernels() {
  return {&moments, &forward, &grad_sums, &grad_input, &tables<float>, &tables<double>};
}

}  // namespace medkern::cpu::CPU_CAPABILITY
