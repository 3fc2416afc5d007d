// CPU kernels of medkern::modulate_weight and medkern::modulate_weight_backward, compiled once for
// each CPU capability into namespace medkern::cpu::CPU_CAPABILITY; csrc/cpu/modulate_weight.cpp
// picks one. Raw pointers only; the math is csrc/common/modulate_weight.h.
//
// Everything is computed in the op-math type U (float for float16 and bfloat16): weight and the
// styles expanded to a row's length (sx[n, i * K + k] = s[n, i]) are converted once, so a row of
// u = W[o, :] * sx[n, :] is one vector product for any kernel size. The work is split in fixed
// units whose sums run in a fixed order, so results do not depend on the thread count:
//   forward     a task per row (n, o): d from the row's sum of squares, then the row.
//   backward 1  a task per row: d and dot = sum(g * u) into (N, O) buffers (demodulate only).
//   backward 2  a task per o: gW[o, :] = sum over n of du[n, o, :] * sx[n, :].
//   backward 3  a task per n: gs[n, i] = sum over o, then k, of du[n, o, i, k] * W[o, i, k].

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../common/modulate_weight.h"
#include "modulate_weight_kernel.h"
#include "vec_io.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kTaskElements = 1 << 15;  // elements a thread takes at least

// Units (rows, or whole passes over one index) a thread takes at least.
int64_t grain(int64_t elements_per_unit) {
  return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, elements_per_unit));
}

// t as U: t itself when it is U, else a converted copy.
template <typename U, typename scalar_t>
const U* as_opmath(const scalar_t* t, int64_t n, std::vector<U>& copy) {
  if constexpr (std::is_same_v<U, scalar_t>) {
    return t;
  } else {
    copy.resize(n);
    at::vec::convert(t, copy.data(), n);
    return copy.data();
  }
}

// sx (N, R): each style repeated K times.
template <typename U, typename scalar_t>
std::vector<U> expanded_styles(const scalar_t* styles, const ModulateWeightShape& s) {
  std::vector<U> sx(s.n * s.row());
  for (int64_t j = 0; j < s.n * s.i; ++j) std::fill_n(sx.data() + j * s.k, s.k, static_cast<U>(styles[j]));
  return sx;
}

template <typename U>
void multiply(const U* a, const U* b, U* out, int64_t n) {
  at::vec::map2([](const Vec<U>& x, const Vec<U>& y) { return x * y; }, out, a, b, n);
}

template <typename U>
U sum_of_squares(const U* u, int64_t n) {
  return at::vec::map_reduce_all([](const Vec<U>& x) { return x * x; },
                                 [](const Vec<U>& x, const Vec<U>& y) { return x + y; }, u, n);
}

template <typename U>
U dot(const U* a, const U* b, int64_t n) {
  return at::vec::map2_reduce_all([](const Vec<U>& x, const Vec<U>& y) { return x * y; },
                                  [](const Vec<U>& x, const Vec<U>& y) { return x + y; }, a, b, n);
}

template <typename scalar_t>
void forward_kernel(const scalar_t* weight, const scalar_t* styles, scalar_t* out, const ModulateWeightShape& s,
                    bool demodulate, double eps_value) {
  using U = at::opmath_type<scalar_t>;
  const U eps = static_cast<U>(eps_value);
  const int64_t r = s.row();
  std::vector<U> w_copy;
  const U* w = as_opmath<U>(weight, s.o * r, w_copy);
  const std::vector<U> sx = expanded_styles<U>(styles, s);
  at::parallel_for(0, s.n * s.o, grain(r), [&](int64_t begin, int64_t end) {
    std::vector<U> u(r), row_buf(r);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.o, o = row % s.o;
      multiply(w + o * r, sx.data() + n * r, u.data(), r);
      const U d = modulate_weight_coefficient(sum_of_squares(u.data(), r), eps, demodulate);
      scalar_t* dst = out + row * r;
      U* y = out_opmath<U>(dst, row_buf.data());
      at::vec::map([d](const Vec<U>& x) { return modulate_weight_forward(x, Vec<U>(d)); }, y, u.data(), r);
      store_opmath(y, dst, r);
    }
  });
}

// du of row (n, o) for the backward passes.
template <typename scalar_t>
struct GradRows {
  using U = at::opmath_type<scalar_t>;
  const scalar_t* grad;
  const U* w;
  const U* sx;
  const U* d;    // (N, O), demodulate only
  const U* dot;  // (N, O), demodulate only
  ModulateWeightShape s;
  bool demodulate;

  // u and du of the row, in the caller's buffers (g_buf: grad's row as U).
  void du(int64_t n, int64_t o, U* u, U* g_buf, U* out) const {
    const int64_t r = s.row();
    const U* g = load_opmath(grad + (n * s.o + o) * r, r, g_buf);
    if (!demodulate) {
      std::copy_n(g, r, out);
      return;
    }
    multiply(w + o * r, sx + n * r, u, r);
    const Vec<U> dv(d[n * s.o + o]), dotv(dot[n * s.o + o]);
    at::vec::map2([&](const Vec<U>& gv, const Vec<U>& uv) { return modulate_weight_du(gv, uv, dv, dotv, true); },
                  out, g, u, r);
  }
};

template <typename scalar_t>
void backward_kernel(const scalar_t* grad, const scalar_t* weight, const scalar_t* styles, scalar_t* grad_weight,
                     scalar_t* grad_styles, const ModulateWeightShape& s, bool demodulate, double eps_value) {
  using U = at::opmath_type<scalar_t>;
  const U eps = static_cast<U>(eps_value);
  const int64_t r = s.row();
  std::vector<U> w_copy;
  const U* w = as_opmath<U>(weight, s.o * r, w_copy);
  const std::vector<U> sx = expanded_styles<U>(styles, s);
  std::vector<U> d(demodulate ? s.n * s.o : 0), dots(d.size());
  if (demodulate) {
    at::parallel_for(0, s.n * s.o, grain(r), [&](int64_t begin, int64_t end) {
      std::vector<U> u(r), g_buf(r);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / s.o, o = row % s.o;
        multiply(w + o * r, sx.data() + n * r, u.data(), r);
        const U* g = load_opmath(grad + row * r, r, g_buf.data());
        d[row] = modulate_weight_coefficient(sum_of_squares(u.data(), r), eps, true);
        dots[row] = dot(g, u.data(), r);
      }
    });
  }
  const GradRows<scalar_t> rows{grad, w, sx.data(), d.data(), dots.data(), s, demodulate};
  at::parallel_for(0, s.o, grain(s.n * r), [&](int64_t begin, int64_t end) {
    std::vector<U> u(r), g_buf(r), du(r), acc(r), out_buf(r);
    for (int64_t o = begin; o < end; ++o) {
      std::fill(acc.begin(), acc.end(), U(0));
      for (int64_t n = 0; n < s.n; ++n) {
        rows.du(n, o, u.data(), g_buf.data(), du.data());
        at::vec::map3([](const Vec<U>& a, const Vec<U>& x, const Vec<U>& y) { return a + x * y; }, acc.data(),
                      acc.data(), du.data(), sx.data() + n * r, r);
      }
      scalar_t* dst = grad_weight + o * r;
      U* out = out_opmath<U>(dst, out_buf.data());
      std::copy(acc.begin(), acc.end(), out);
      store_opmath(out, dst, r);
    }
  });
  at::parallel_for(0, s.n, grain(s.o * r), [&](int64_t begin, int64_t end) {
    std::vector<U> u(r), g_buf(r), du(r), acc(s.i), out_buf(s.i);
    for (int64_t n = begin; n < end; ++n) {
      std::fill(acc.begin(), acc.end(), U(0));
      for (int64_t o = 0; o < s.o; ++o) {
        rows.du(n, o, u.data(), g_buf.data(), du.data());
        multiply(du.data(), w + o * r, du.data(), r);
        for (int64_t i = 0; i < s.i; ++i) {
          U sum(0);
          for (int64_t k = 0; k < s.k; ++k) sum += du[i * s.k + k];
          acc[i] += sum;
        }
      }
      scalar_t* dst = grad_styles + n * s.i;
      U* out = out_opmath<U>(dst, out_buf.data());
      std::copy(acc.begin(), acc.end(), out);
      store_opmath(out, dst, s.i);
    }
  });
}

void forward(at::ScalarType dtype, const void* weight, const void* styles, void* out, const ModulateWeightShape& s,
             bool demodulate, double eps) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::modulate_weight", [&] {
    forward_kernel<scalar_t>(static_cast<const scalar_t*>(weight), static_cast<const scalar_t*>(styles),
                             static_cast<scalar_t*>(out), s, demodulate, eps);
  });
}

void backward(at::ScalarType dtype, const void* grad, const void* weight, const void* styles, void* grad_weight,
              void* grad_styles, const ModulateWeightShape& s, bool demodulate, double eps) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::modulate_weight_backward", [&] {
    backward_kernel<scalar_t>(static_cast<const scalar_t*>(grad), static_cast<const scalar_t*>(weight),
                              static_cast<const scalar_t*>(styles), static_cast<scalar_t*>(grad_weight),
                              static_cast<scalar_t*>(grad_styles), s, demodulate, eps);
  });
}

}  // namespace

ModulateWeightKernels modulate_weight_kernels() { return {&forward, &backward}; }

}  // namespace medkern::cpu::CPU_CAPABILITY
