// See capability.h.

#include "capability.h"

#include <ATen/Version.h>

namespace medkern::cpu {

std::string kernel_capability() {
  const std::string capability = at::get_cpu_capability();
#ifdef MEDKERN_CPU_AVX512
  if (capability == "AVX512") return "AVX512";
#endif
#ifdef MEDKERN_CPU_AVX2
  if (capability == "AVX512" || capability == "AVX2") return "AVX2";
#endif
  return "DEFAULT";
}

}  // namespace medkern::cpu
