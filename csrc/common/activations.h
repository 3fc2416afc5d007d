#pragma once
// The one activation table of the C++ kernels: every activation's value and its first and
// second derivative, as templates over the argument type T (float or double on host and
// device; at::vec::Vectorized<float|double> on the CPU). CPU and CUDA kernels both call these,
// so the CPU tests exercise the math the GPU runs.
//
// Conventions follow torch's autograd at the kinks: relu'(0) = 0, lrelu'(0) = alpha,
// elu'(0) = alpha but elu''(0) = 0 (likewise selu); and at NaN: relu(NaN) = NaN, relu'(NaN) = 1,
// elu'(NaN) = 1 (torch tests z <= 0 for the negative branch, which NaN fails).
// The Python table (names, ids, default alphas) is medkern/activations.py; the Triton twin
// is medkern/triton/activations.py; ids here match both.

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <string>

#include "math.h"

namespace medkern {

enum class Act : int {
  kLinear = 0,
  kRelu = 1,
  kLRelu = 2,
  kTanh = 3,
  kSigmoid = 4,
  kElu = 5,
  kSelu = 6,
  kSoftplus = 7,
  kSilu = 8,
  kGelu = 9,
};

// Canonical names and aliases, as in medkern/activations.py.
inline Act parse_act(c10::string_view op, c10::string_view name) {
  const std::string n(name);
  if (n == "linear" || n == "identity" || n == "none") return Act::kLinear;
  if (n == "relu") return Act::kRelu;
  if (n == "lrelu" || n == "leaky_relu") return Act::kLRelu;
  if (n == "tanh") return Act::kTanh;
  if (n == "sigmoid") return Act::kSigmoid;
  if (n == "elu") return Act::kElu;
  if (n == "selu") return Act::kSelu;
  if (n == "softplus") return Act::kSoftplus;
  if (n == "silu" || n == "swish") return Act::kSilu;
  if (n == "gelu") return Act::kGelu;
  TORCH_CHECK_VALUE(false, op, ": unknown activation act='", n,
                    "'; expected one of linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, silu, gelu");
}

// Calls f(std::integral_constant<Act, A>{}) for the runtime `act`, so kernels are
// instantiated per activation and the inner loops carry no switch.
template <typename F>
decltype(auto) dispatch_act(Act act, F&& f) {
  switch (act) {
#define MEDKERN_ACT_CASE(A) \
  case A:                   \
    return f(std::integral_constant<Act, A>{});
    MEDKERN_ACT_CASE(Act::kLinear)
    MEDKERN_ACT_CASE(Act::kRelu)
    MEDKERN_ACT_CASE(Act::kLRelu)
    MEDKERN_ACT_CASE(Act::kTanh)
    MEDKERN_ACT_CASE(Act::kSigmoid)
    MEDKERN_ACT_CASE(Act::kElu)
    MEDKERN_ACT_CASE(Act::kSelu)
    MEDKERN_ACT_CASE(Act::kSoftplus)
    MEDKERN_ACT_CASE(Act::kSilu)
    MEDKERN_ACT_CASE(Act::kGelu)
#undef MEDKERN_ACT_CASE
  }
  TORCH_CHECK(false, "medkern: unhandled activation id ", static_cast<int>(act));
}

// SELU's constants and softplus's linear threshold, as torch uses them (and
// medkern/activations.py states them).
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSoftplusThreshold = 20.0;
constexpr double kInvSqrt2 = 0.70710678118654752440084436210485;
constexpr double kInvSqrt2Pi = 0.39894228040143267793994605993438;

template <typename T>
struct scalar_of {
  using type = T;
};
#ifdef MEDKERN_HAS_VEC
template <typename T>
struct scalar_of<Vec<T>> {
  using type = T;
};
#endif

// The Order-th derivative (0: the value) of activation A at z; alpha as documented in
// medkern/activations.py (lrelu's slope, elu's alpha; unused otherwise).
template <Act A, int Order, typename T>
C10_HOST_DEVICE inline T activation(const T& z, const T& alpha) {
  static_assert(Order >= 0 && Order <= 2, "the kernels compute derivatives up to order 2");
  using S = typename scalar_of<T>::type;
  const T zero(S(0)), one(S(1)), two(S(2));

  if constexpr (A == Act::kLinear) {
    if constexpr (Order == 0) return z;
    else if constexpr (Order == 1) return one;
    else return zero;
  } else if constexpr (A == Act::kRelu) {
    if constexpr (Order == 0) return select(z < zero, zero, z);
    else if constexpr (Order == 1) return select(z <= zero, zero, one);
    else return zero;
  } else if constexpr (A == Act::kLRelu) {
    if constexpr (Order == 0) return select(z > zero, z, z * alpha);
    else if constexpr (Order == 1) return select(z > zero, one, alpha);
    else return zero;
  } else if constexpr (A == Act::kTanh) {
    const T t = tanh_(z);
    if constexpr (Order == 0) return t;
    else if constexpr (Order == 1) return one - t * t;
    else return (t * (t * t - one)) * two;
  } else if constexpr (A == Act::kSigmoid || A == Act::kSoftplus || A == Act::kSilu) {
    const T s = one / (one + exp_(zero - z));
    const T ds = s * (one - s);
    if constexpr (A == Act::kSigmoid) {
      if constexpr (Order == 0) return s;
      else if constexpr (Order == 1) return ds;
      else return ds * (one - two * s);
    } else if constexpr (A == Act::kSoftplus) {
      const auto linear = z > T(S(kSoftplusThreshold));
      if constexpr (Order == 0) return select(linear, z, log1p_(exp_(z)));
      else if constexpr (Order == 1) return select(linear, one, s);
      else return select(linear, zero, ds);
    } else {  // silu(z) = z * sigmoid(z)
      if constexpr (Order == 0) return z * s;
      else if constexpr (Order == 1) return s + z * ds;
      else return ds * (two + z * (one - two * s));
    }
  } else if constexpr (A == Act::kElu || A == Act::kSelu) {
    const T a = A == Act::kElu ? alpha : T(S(kSeluAlpha));
    const T scale = A == Act::kElu ? one : T(S(kSeluScale));
    if constexpr (Order == 0) return select(z > zero, z, a * expm1_(z)) * scale;
    else if constexpr (Order == 1) return select(z <= zero, a * exp_(z), one) * scale;
    else return select(z < zero, a * exp_(z), zero) * scale;  // 0 at z = 0, as torch's elu double backward
  } else if constexpr (A == Act::kGelu) {
    const S half(0.5);
    if constexpr (Order == 0) return z * (one + erf_(z * T(S(kInvSqrt2)))) * T(half);
    else {
      const T pdf = exp_(z * z * T(S(-0.5))) * T(S(kInvSqrt2Pi));
      if constexpr (Order == 1) return (one + erf_(z * T(S(kInvSqrt2)))) * T(half) + z * pdf;
      else return pdf * (two - z * z);
    }
  }
}

// For the activations whose value determines their argument (linear; lrelu and elu with
// alpha > 0), the argument and the first derivative recovered from the value y = act(z), so a
// backward can keep y alone (InPlace-ABN). medkern/reference/norm_act.py states the same.
constexpr bool recoverable_from_output(Act a) { return a == Act::kLinear || a == Act::kLRelu || a == Act::kElu; }

template <Act A, typename T>
C10_HOST_DEVICE inline T activation_inverse(const T& y, const T& alpha) {
  static_assert(recoverable_from_output(A), "activation_inverse: act is not invertible");
  using S = typename scalar_of<T>::type;
  const T zero(S(0));
  if constexpr (A == Act::kLinear) return y;
  else if constexpr (A == Act::kLRelu) return select(y < zero, y / alpha, y);
  else return select(y > zero, y, log1p_(y / alpha));
}

// act'(z) in terms of y, with torch's values at the kink: z > 0 exactly where y > 0.
template <Act A, typename T>
C10_HOST_DEVICE inline T activation_derivative_from_output(const T& y, const T& alpha) {
  static_assert(recoverable_from_output(A), "activation_derivative_from_output: act is not invertible");
  using S = typename scalar_of<T>::type;
  const T zero(S(0)), one(S(1));
  if constexpr (A == Act::kLinear) return one;
  else if constexpr (A == Act::kLRelu) return select(y > zero, one, alpha);
  else return select(y > zero, one, y + alpha);  // alpha * exp(z) = y + alpha where z <= 0
}

}  // namespace medkern
