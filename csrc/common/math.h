#pragma once
// The few math primitives the shared kernels use, overloaded so one template body serves
// scalars on the host and the device (float, double) and, in CPU builds, at::vec::Vectorized
// lanes. A comparison yields `bool` for scalars and a lane mask for vectors; `select` takes
// either.

#include <c10/macros/Macros.h>
#include <cmath>

#if !defined(__CUDACC__) && !defined(__HIPCC__)
#include <ATen/cpu/vec/vec.h>
#define MEDKERN_HAS_VEC 1
#endif

namespace medkern {

C10_HOST_DEVICE inline float exp_(float v) { return ::expf(v); }
C10_HOST_DEVICE inline double exp_(double v) { return ::exp(v); }
C10_HOST_DEVICE inline float expm1_(float v) { return ::expm1f(v); }
C10_HOST_DEVICE inline double expm1_(double v) { return ::expm1(v); }
C10_HOST_DEVICE inline float log1p_(float v) { return ::log1pf(v); }
C10_HOST_DEVICE inline double log1p_(double v) { return ::log1p(v); }
C10_HOST_DEVICE inline float tanh_(float v) { return ::tanhf(v); }
C10_HOST_DEVICE inline double tanh_(double v) { return ::tanh(v); }
C10_HOST_DEVICE inline float erf_(float v) { return ::erff(v); }
C10_HOST_DEVICE inline double erf_(double v) { return ::erf(v); }

template <typename T>
C10_HOST_DEVICE inline T select(bool cond, T if_true, T if_false) {
  return cond ? if_true : if_false;
}

#ifdef MEDKERN_HAS_VEC
template <typename T>
using Vec = at::vec::Vectorized<T>;

template <typename T> inline Vec<T> exp_(const Vec<T>& v) { return v.exp(); }
template <typename T> inline Vec<T> expm1_(const Vec<T>& v) { return v.expm1(); }
template <typename T> inline Vec<T> log1p_(const Vec<T>& v) { return v.log1p(); }
template <typename T> inline Vec<T> tanh_(const Vec<T>& v) { return v.tanh(); }
template <typename T> inline Vec<T> erf_(const Vec<T>& v) { return v.erf(); }

// `mask` lanes are all ones where true (what Vectorized's comparison operators return).
template <typename T>
inline Vec<T> select(const Vec<T>& mask, const Vec<T>& if_true, const Vec<T>& if_false) {
  return Vec<T>::blendv(if_false, if_true, mask);
}
#endif

}  // namespace medkern
