#pragma once
// medkern::norm_act's CPU kernels, one set per compiled capability (see bias_act_kernel.h).

#include "../common/norm_act_kernels.h"

namespace medkern::cpu {

namespace DEFAULT { NormActKernels norm_act_kernels(); }
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 { NormActKernels norm_act_kernels(); }
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 { NormActKernels norm_act_kernels(); }
#endif

}  // namespace medkern::cpu
