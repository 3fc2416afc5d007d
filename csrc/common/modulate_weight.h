#pragma once
// modulate_weight's math for one row (n, o) of the output, shared by the CPU and CUDA kernels.
// With u = W[o, :] * s[n, i(:)] over the R = I * K elements of the row:
//   d  = rsqrt(sum u^2 + eps)                  (1 without demodulation)
//   w  = u * d
//   du = d * g - d^3 * u * sum(g * u)          (g without demodulation)
// U is the arithmetic type: float for float, half and bfloat16 tensors; double for double.
// Rows are summed in element order by one thread (CPU) or one block (CUDA): deterministic.

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace medkern {

// weight (O, I, *k) seen as O rows of R = I * K elements (K the kernel's size); styles (N, I).
struct ModulateWeightShape {
  int64_t n, o, i, k;
  C10_HOST_DEVICE int64_t row() const { return i * k; }
};

C10_HOST_DEVICE inline float modulate_weight_sqrt(float v) { return ::sqrtf(v); }
C10_HOST_DEVICE inline double modulate_weight_sqrt(double v) { return ::sqrt(v); }

// d of a row from its sum of u^2.
template <typename U>
C10_HOST_DEVICE inline U modulate_weight_coefficient(U sum_sq, U eps, bool demodulate) {
  return demodulate ? U(1) / modulate_weight_sqrt(sum_sq + eps) : U(1);
}

// One element of the output from u = W * s. (These templates also take at::vec lanes on the CPU.)
template <typename U>
C10_HOST_DEVICE inline U modulate_weight_forward(U u, U d) {
  return u * d;
}

// The gradient w.r.t. u of one element, from the row's d and dot = sum(g * u).
template <typename U>
C10_HOST_DEVICE inline U modulate_weight_du(U g, U u, U d, U dot, bool demodulate) {
  return demodulate ? d * g - d * d * d * u * dot : g;
}

}  // namespace medkern
