#pragma once
// Argument checks shared by every op. Each message names the op and the argument, and says
// what was expected. Python (medkern/ops) checks the same before dispatch; these guard direct
// torch.ops.medkern.* calls.

#include <ATen/ATen.h>

namespace medkern {

inline void check_floating(const char* op, const char* arg, const at::Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, op, ": ", arg,
                   " must be float32, float64, float16 or bfloat16, got ", st);
}

inline void check_same_dtype(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), op, ": ", arg, " must have dtype ", like.scalar_type(),
                   " (that of x), got ", t.scalar_type());
}

inline void check_same_device(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", arg, " must be on ", like.device(), " (the device of x), got ",
                    t.device());
}

inline void check_same_shape(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.sizes() == like.sizes(), op, ": ", arg, " must have the shape of x ", like.sizes(), ", got ",
                    t.sizes());
}

// Returns dim wrapped into [0, ndim).
inline int64_t check_dim(const char* op, int64_t dim, int64_t ndim) {
  TORCH_CHECK_VALUE(ndim >= 1, op, ": x must have at least one dimension, got a 0-d tensor");
  TORCH_CHECK_VALUE(dim >= -ndim && dim < ndim, op, ": dim must be in [", -ndim, ", ", ndim - 1, "] for a ", ndim,
                    "-d x, got ", dim);
  return dim < 0 ? dim + ndim : dim;
}

}  // namespace medkern
