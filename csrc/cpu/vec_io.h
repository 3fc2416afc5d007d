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

// The sum of v's lanes, added pairwise (a tree of depth log2(lanes): a chain of scalar adds
// would cost a latency per lane, which dominates reductions over short runs). ATen shuffles
// float vectors in registers; other types take the tree through memory.
template <typename U>
U sum_lanes(const Vec<U>& v) {
  if constexpr (std::is_same_v<U, float>) {
    return at::vec::vec_reduce_all<U>([](const Vec<U>& a, const Vec<U>& b) { return a + b; }, v);
  } else {
    constexpr int64_t kLanes = Vec<U>::size();
    U lanes[kLanes];
    v.store(lanes);
    for (int64_t width = kLanes / 2; width > 0; width /= 2) {
      for (int64_t i = 0; i < width; ++i) lanes[i] += lanes[i + width];
    }
    return lanes[0];
  }
}

}  // namespace
}  // namespace medkern::cpu::CPU_CAPABILITY
