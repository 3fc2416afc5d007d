#pragma once
// bias_act's per-element math, shared by the CPU and CUDA kernels:
//   forward:           y  = clamp(act(z) * gain, -clamp, clamp),           z = x + b
//   gradient, order k: gx = g * gain * act^(k)(z) * [-clamp <= act(z) * gain <= clamp]
// The clamp mask is inclusive at both ends, as torch.clamp's gradient is.

#include <cstdint>
#include <optional>

#include "activations.h"

namespace medkern {

// U is the arithmetic type: float for float, half and bfloat16 tensors; double for double.
template <typename U>
struct BiasActParams {
  U alpha;
  U gain;
  U clamp;  // meaningful when has_clamp
  bool has_clamp;
};

// An op's resolved arguments (host side); params<U>() is what the element functions take.
struct BiasActArgs {
  Act act;
  int64_t dim;
  double alpha;
  double gain;
  std::optional<double> clamp;

  template <typename U>
  BiasActParams<U> params() const {
    return {static_cast<U>(alpha), static_cast<U>(gain), static_cast<U>(clamp.value_or(0.0)), clamp.has_value()};
  }
};

template <typename T>
C10_HOST_DEVICE inline T clamp_symmetric(const T& v, const T& c) {
  // NaN passes through, as with torch.clamp
  using S = typename scalar_of<T>::type;
  const T neg_c = T(S(0)) - c;
  return select(v > c, c, select(v < neg_c, neg_c, v));
}

template <Act A, typename T, typename U>
C10_HOST_DEVICE inline T bias_act_forward(const T& z, const BiasActParams<U>& p) {
  const T v = activation<A, 0>(z, T(p.alpha)) * T(p.gain);
  return p.has_clamp ? clamp_symmetric(v, T(p.clamp)) : v;
}

template <Act A, int Order, typename T, typename U>
C10_HOST_DEVICE inline T bias_act_grad(const T& g, const T& z, const BiasActParams<U>& p) {
  const T d = activation<A, Order>(z, T(p.alpha)) * T(p.gain);
  if (!p.has_clamp) return g * d;
  const T v = activation<A, 0>(z, T(p.alpha)) * T(p.gain);
  const T c(p.clamp), zero(U(0));
  return select((v <= c) & (v >= zero - c), g * d, zero);
}

}  // namespace medkern
