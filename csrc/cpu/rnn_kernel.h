#pragma once
// medkern::rnn_sequence's CPU kernels, one set per compiled capability (see bias_act_kernel.h).

#include "../common/rnn.h"

namespace medkern::cpu {

namespace DEFAULT { RnnKernels rnn_kernels(); }
#ifdef MEDKERN_CPU_AVX2
namespace AVX2 { RnnKernels rnn_kernels(); }
#endif
#ifdef MEDKERN_CPU_AVX512
namespace AVX512 { RnnKernels rnn_kernels(); }
#endif

}  // namespace medkern::cpu
