// medkern::upfirdn2d on CPU: argument handling (csrc/common/upfirdn2d_op.h), then the kernel of
// the best capability this CPU has.

#include <torch/library.h>

#include "../common/upfirdn2d_op.h"
#include "capability.h"
#include "upfirdn2d_kernel.h"

namespace medkern::cpu {
namespace {

const UpFirDn2dKernels& kernels() {
  static const UpFirDn2dKernels chosen = MEDKERN_CPU_KERNELS(upfirdn2d_kernels);
  return chosen;
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, at::IntArrayRef up, at::IntArrayRef down,
                         at::IntArrayRef padding, bool flip_filter, double gain) {
  return upfirdn2d_op(x, f, up, down, padding, flip_filter, gain,
                      [&](const at::Tensor& xd, const at::Tensor& taps, at::Tensor& out, const UpFirDn2dProblem& p) {
                        const UpFirDn2dPointers ptr{xd.const_data_ptr(), taps.const_data_ptr(), out.mutable_data_ptr()};
                        kernels().forward(x.scalar_type(), ptr, p);
                      });
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }

}  // namespace medkern::cpu
