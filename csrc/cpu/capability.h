#pragma once
// Which compiled set of CPU kernels runs: the best capability (DEFAULT, AVX2, AVX512; see
// setup.py) that was compiled and that ATen reports for this CPU, so ATEN_CPU_CAPABILITY=default
// forces the portable kernels.

#include <string>

namespace medkern::cpu {

std::string kernel_capability();

// Calls the factory of the capability in use; avx2/avx512 are null where not compiled.
template <typename Kernels>
Kernels pick_kernels(Kernels (*portable)(), Kernels (*avx2)(), Kernels (*avx512)()) {
  const std::string capability = kernel_capability();
  if (avx512 != nullptr && capability == "AVX512") return avx512();
  if (avx2 != nullptr && capability == "AVX2") return avx2();
  return portable();
}

}  // namespace medkern::cpu

#ifdef MEDKERN_CPU_AVX2
#define MEDKERN_AVX2_FACTORY(factory) &AVX2::factory
#else
#define MEDKERN_AVX2_FACTORY(factory) nullptr
#endif
#ifdef MEDKERN_CPU_AVX512
#define MEDKERN_AVX512_FACTORY(factory) &AVX512::factory
#else
#define MEDKERN_AVX512_FACTORY(factory) nullptr
#endif

// The kernels `factory` (a function in each capability's namespace) returns for this CPU.
#define MEDKERN_CPU_KERNELS(factory) \
  ::medkern::cpu::pick_kernels(&DEFAULT::factory, MEDKERN_AVX2_FACTORY(factory), MEDKERN_AVX512_FACTORY(factory))
