#pragma once
// Moving data between a tensor's dtype and the op-math type U the CPU kernels compute in
// (float for half and bfloat16, else the dtype itself), and folding a vector's lanes. Compiled
// into each capability's namespace by the kernel files that include it.

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

#include "../common/math.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

// Reads n elements of src as U: src itself when it is U already, else converted into buf.
template <typename U, typename scalar_t>
const U* load_opmath(const scalar_t* src, int64_t n, U* buf) {
  if constexpr (std::is_same_v<U, scalar_t>) {
    return src;
  } else {
    at::vec::convert(src, buf, n);
    return buf;
  }
}

// Where to write n results in U: dst itself when it is U, else buf (then store_opmath).
template <typename U, typename scalar_t>
U* out_opmath(scalar_t* dst, U* buf) {
  if constexpr (std::is_same_v<U, scalar_t>) {
    return dst;
  } else {
    return buf;
  }
}

template <typename U, typename scalar_t>
void store_opmath(const U* src, scalar_t* dst, int64_t n) {
  if constexpr (!std::is_same_v<U, scalar_t>) at::vec::convert(src, dst, n);
}

template <typename U>
U sum_lanes(const Vec<U>& v) {
  U lanes[Vec<U>::size()];
  v.store(lanes);
  U total(0);
  for (int64_t i = 0; i < Vec<U>::size(); ++i) total += lanes[i];
  return total;
}

}  // namespace
}  // namespace medkern::cpu::CPU_CAPABILITY
