// CPU kernels of medkern::norm_act (csrc/common/norm_act_kernels.h), compiled once per CPU
// capability like bias_act_kernel.cpp. Raw pointers only.
//
// Every kernel walks the same tasks: one segment of one (n, c) plane (planar layout: a
// contiguous run, its coefficients scalars) or one segment of rows of one sample (interleaved
// layout: each row holds all C channels, its coefficients vectors read from the tables).
// Reductions write one partial sum per (n, c, segment), so no two tasks share an output and the
// results do not depend on the number of threads. The math is csrc/common/norm_act.h and
// norm_act_tables.h.

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
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

// Where (n, c, segment) partial sums of task `task` go, for channel offset j of its runs.
int64_t partial_index(const NormShape& sh, int64_t task, int64_t j) {
  const int64_t k_count = sh.segments();
  if (!sh.interleaved) return task;  // task = plane * K + k = (n * C + c) * K + k
  const int64_t n = task / k_count, k = task % k_count;
  return (n * sh.c + j) * k_count + k;
}

// Tasks per thread at least: inputs under ~32K elements run on the calling thread, since an
// OpenMP region costs more than they do (and much more when another process holds a core).
int64_t task_grain(const NormShape& sh) {
  const int64_t task_elements = std::max<int64_t>(1, sh.interleaved ? sh.segment * sh.c : std::min(sh.segment, sh.s));
  return std::max<int64_t>(1, (int64_t{1} << 15) / task_elements);
}

int64_t max_run(const NormShape& sh) { return sh.interleaved ? sh.c : std::min(sh.segment, sh.s); }

// Adds v's lanes into acc[i, i + m) (interleaved), or into the scalar-broadcast accumulator
// acc_vec (planar), masking lanes past m.
template <bool Rows, typename U>
inline void accumulate(U* acc, Vec<U>& acc_vec, int64_t i, int64_t m, const Vec<U>& v) {
  const Vec<U> masked = m == Vec<U>::size() ? v : Vec<U>::set(Vec<U>(U(0)), v, m);
  if constexpr (Rows) {
    (Vec<U>::loadu(acc + i, m) + masked).store(acc + i, m);
  } else {
    acc_vec = acc_vec + masked;
  }
}

template <typename scalar_t, bool Rows>
void moments_rows(const scalar_t* x, const NormShape& sh, at::opmath_type<scalar_t>* mean_out,
                  at::opmath_type<scalar_t>* m2_out) {
  using U = at::opmath_type<scalar_t>;
  using V = Vec<U>;
  at::parallel_for(0, task_count(sh), task_grain(sh), [&](int64_t begin, int64_t end) {
    std::vector<U> buf(max_run(sh)), sum(Rows ? sh.c : 0), mean(Rows ? sh.c : 0), m2(Rows ? sh.c : 0);
    for (int64_t task = begin; task < end; ++task) {
      // pass 1: the segment's mean per channel; pass 2: squared deviations from it, while the
      // segment is still in cache (exact for any offset, unlike a sum of squares)
      std::fill(sum.begin(), sum.end(), U(0));
      std::fill(m2.begin(), m2.end(), U(0));
      V acc(U(0)), acc2(U(0));
      int64_t rows = 0;
      U run_mean(0);
      for_each_run(sh, task, [&](int64_t off, int64_t len, int64_t) {
        const U* v = load_opmath(x + off, len, buf.data());
        for (int64_t i = 0; i < len; i += V::size()) {
          const int64_t m = std::min<int64_t>(V::size(), len - i);
          accumulate<Rows>(sum.data(), acc, i, m, V::loadu(v + i, m));
        }
        rows += Rows ? 1 : len;
      });
      if constexpr (Rows) {
        for (int64_t c = 0; c < sh.c; ++c) mean[c] = sum[c] / static_cast<U>(rows);
      } else {
        run_mean = sum_lanes(acc) / static_cast<U>(rows);
      }
      for_each_run(sh, task, [&](int64_t off, int64_t len, int64_t) {
        const U* v = load_opmath(x + off, len, buf.data());
        for (int64_t i = 0; i < len; i += V::size()) {
          const int64_t m = std::min<int64_t>(V::size(), len - i);
          const V d = V::loadu(v + i, m) - (Rows ? V::loadu(mean.data() + i, m) : V(run_mean));
          accumulate<Rows>(m2.data(), acc2, i, m, d * d);
        }
      });
      if constexpr (Rows) {
        for (int64_t c = 0; c < sh.c; ++c) {
          mean_out[partial_index(sh, task, c)] = mean[c];
          m2_out[partial_index(sh, task, c)] = m2[c];
        }
      } else {
        mean_out[task] = run_mean;
        m2_out[task] = sum_lanes(acc2);
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

// Sums dpre and dpre * xhat per (n, c, segment).
template <bool Rows, typename U>
struct SumTerms {
  const NormShape& sh;
  U* sum_dpre;
  U* sum_dpre_xhat;
  std::vector<U> a, b;  // per channel (interleaved)
  Vec<U> av{U(0)}, bv{U(0)};

  SumTerms(const NormShape& shape, U* s1, U* s2) : sh(shape), sum_dpre(s1), sum_dpre_xhat(s2), a(Rows ? shape.c : 0), b(a) {}
  SumTerms(const SumTerms& o) : SumTerms(o.sh, o.sum_dpre, o.sum_dpre_xhat) {}

  void start(int64_t) {
    std::fill(a.begin(), a.end(), U(0));
    std::fill(b.begin(), b.end(), U(0));
    av = bv = Vec<U>(U(0));
  }
  void element(int64_t, int64_t, int64_t i, int64_t m, const Vec<U>& dpre, const Vec<U>& xhat) {
    accumulate<Rows>(a.data(), av, i, m, dpre);
    accumulate<Rows>(b.data(), bv, i, m, dpre * xhat);
  }
  void end_run(int64_t, int64_t) {}
  void finish(int64_t task) {
    if constexpr (Rows) {
      for (int64_t c = 0; c < sh.c; ++c) {
        sum_dpre[partial_index(sh, task, c)] = a[c];
        sum_dpre_xhat[partial_index(sh, task, c)] = b[c];
      }
    } else {
      sum_dpre[task] = sum_lanes(av);
      sum_dpre_xhat[task] = sum_lanes(bv);
    }
  }
};

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
    if (sh.interleaved) {
      moments_rows<scalar_t, true>(xp, sh, static_cast<U*>(mean), static_cast<U*>(m2));
    } else {
      moments_rows<scalar_t, false>(xp, sh, static_cast<U*>(mean), static_cast<U*>(m2));
    }
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
        grad_terms<A, FromOutput, true>(gp, sp, tb, alpha, sh, SumTerms<true, U>(sh, s1, s2));
      } else {
        grad_terms<A, FromOutput, false>(gp, sp, tb, alpha, sh, SumTerms<false, U>(sh, s1, s2));
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

// The tables are small (an entry per statistics group, (n, c) plane or channel): one thread
// walks them, cheaper than starting a parallel region, unless a reduction step's entries sum
// many partials (channels_last volumes have thousands of segments per plane).
template <typename U>
void tables(NormTableStep step, const NormTableView<U>& view) {
  if (norm_table_per_plane(step)) {
    for (int64_t n = 0; n < view.shape.n; ++n) {
      for (int64_t c = 0; c < view.shape.c; ++c) norm_plane_entry(view, step, n, c);
    }
    return;
  }
  const int64_t entries = norm_table_entries(view, step);
  const int64_t partials = view.shape.n * view.shape.c * view.segments();
  const int64_t per_entry = std::max<int64_t>(1, partials / std::max<int64_t>(1, entries));
  const int64_t grain = norm_table_reduces(step) ? (int64_t{1} << 16) / per_entry : entries;
  at::parallel_for(0, entries, std::max<int64_t>(1, grain), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) norm_table_entry(view, step, i);
  });
}

}  // namespace

NormActKernels norm_act_kernels() {
  return {&moments, &forward, &grad_sums, &grad_input, &tables<float>, &tables<double>};
}

}  // namespace medkern::cpu::CPU_CAPABILITY
