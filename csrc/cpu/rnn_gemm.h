#pragma once
// Which GEMM runs an RNN's products with its fixed weights on CPU (csrc/cpu/rnn.cpp): kAuto picks
// medkern's own (csrc/cpu/gemm_kernel.cpp) where MKL would run its generic code path, else the
// library's (MKL's packed GEMM, or at::mm); the others force one, for tests and comparisons.

namespace medkern::cpu {

enum class RnnGemm { kAuto, kLibrary, kMedkern };

void set_rnn_gemm(RnnGemm choice);

// "medkern" or "library": what the next RNN call will use.
const char* rnn_gemm_in_use();

}  // namespace medkern::cpu
