#pragma once
// What a device provides for medkern::norm_act: the four streaming kernels and the table steps
// (csrc/common/norm_act_tables.h) between them; csrc/norm_act_op.cpp does the rest (checks,
// layout, allocation, the order of the steps). Plain pointers only, so the CPU's per-capability
// objects share no at::Tensor code. U below is the op-math type: float for float, half and
// bfloat16 data; double for double.

#include <c10/core/ScalarType.h>

#include "norm_act.h"
#include "norm_act_tables.h"

namespace medkern {

struct NormActKernels {
  // Per (n, c, segment), [N, C, K] in U: the mean and the sum of squared deviations from it.
  void (*moments)(at::ScalarType dtype, const void* x, const NormShape& shape, void* mean, void* m2);
  // y = act(x * scale + shift); scale and shift are U[N * C].
  void (*forward)(at::ScalarType dtype, Act act, double alpha, const void* x, const void* scale, const void* shift,
                  const NormShape& shape, void* y);
  // Per (n, c, segment), [N, C, K] in U: the sums of dpre and of dpre * xhat. `tables` holds U
  // pointers (NormGradTables<U>); `saved` is y if from_output, else x.
  void (*grad_sums)(at::ScalarType dtype, Act act, double alpha, bool from_output, const void* g, const void* saved,
                    const NormGradTables<void>& tables, const NormShape& shape, void* sum_dpre, void* sum_dpre_xhat);
  // dx = k1 * dpre + k2 * xhat + k3.
  void (*grad_input)(at::ScalarType dtype, Act act, double alpha, bool from_output, const void* g, const void* saved,
                     const NormGradTables<void>& tables, const NormShape& shape, void* dx);
  // Every entry of a table step, for U = float and U = double.
  void (*tables_float)(NormTableStep step, const NormTableView<float>& view);
  void (*tables_double)(NormTableStep step, const NormTableView<double>& view);
};

inline void run_table_step(const NormActKernels& k, NormTableStep step, const NormTableView<float>& view) {
  k.tables_float(step, view);
}
inline void run_table_step(const NormActKernels& k, NormTableStep step, const NormTableView<double>& view) {
  k.tables_double(step, view);
}

// The tables as the kernel's U.
template <typename U>
NormGradTables<U> typed(const NormGradTables<void>& t) {
  auto p = [](const void* v) { return static_cast<const U*>(v); };
  return {p(t.xs), p(t.xo), p(t.scale), p(t.shift), p(t.k1), p(t.k2), p(t.k3)};
}

// Runs f.template operator()<A, FromOutput>() for the runtime act and backward mode (from the
// output only for the activations it determines).
template <typename F>
void dispatch_norm_grad(Act act, bool from_output, F&& f) {
  dispatch_act(act, [&](auto a) {
    constexpr Act A = decltype(a)::value;
    if (from_output) {
      if constexpr (recoverable_from_output(A)) {
        f.template operator()<A, true>();
      } else {
        TORCH_CHECK(false, "medkern::norm_act_backward: the activation cannot be recovered from its output");
      }
    } else {
      f.template operator()<A, false>();
    }
  });
}

}  // namespace medkern
