#include "packed_gemm.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>

// MKL's CBLAS packed-GEMM API (LP64: MKL_INT is int; enums are passed as int). Declared weak:
// libtorch_cpu exports them when torch is built with MKL, and they are null otherwise.
extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float* src,
                      int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a, int lda,
                         const float* b, int ldb, float beta, float* c, int ldc) __attribute__((weak));
}

namespace medkern::cpu {
namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;
constexpr int64_t kMinCalls = 4;  // packing costs about one product

bool mkl_packed_api() { return cblas_sgemm_pack_get_size && cblas_sgemm_pack && cblas_sgemm_compute; }

bool fits_int(int64_t v) { return v >= 0 && v <= INT32_MAX; }

// t (rows x cols) is a row-major matrix MKL can address with ld = max(stride(0), cols).
bool row_major_matrix(const at::Tensor& t, int64_t cols) {
  return t.dim() == 2 && t.size(1) == cols && (t.size(1) <= 1 || t.stride(1) == 1) &&
         (t.size(0) <= 1 || t.stride(0) >= cols) && fits_int(t.stride(0));
}

class PackedGemm final : public FixedRightGemm {
 public:
  PackedGemm(const at::Tensor& b, int64_t rows) : fallback_(b), rows_(rows), k_(b.size(0)), n_(b.size(1)) {
    // b (K x N) is read as itself (row-major) or as the transpose of a row-major N x K
    const bool row_major = (b.stride(1) == 1 || n_ == 1) && (b.stride(0) >= n_ || k_ == 1);
    const bool transposed = !row_major && (b.stride(0) == 1 || k_ == 1) && (b.stride(1) >= k_ || n_ == 1);
    const at::Tensor src = row_major || transposed ? b : b.contiguous();
    // a size-1 dimension's stride is never stepped over; MKL still wants ld >= the row length
    const int64_t ld = transposed ? std::max(src.stride(1), k_) : std::max(src.stride(0), n_);
    const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, rows_, n_, k_);
    packed_ = at::empty({static_cast<int64_t>(bytes / sizeof(float) + 1)}, b.options());
    cblas_sgemm_pack(kRowMajor, kBMatrix, transposed ? kTrans : kNoTrans, rows_, n_, k_, 1.0f,
                     src.const_data_ptr<float>(), ld, packed_.mutable_data_ptr<float>());
  }

  void run(const at::Tensor& a, const at::Tensor& out) const override {
    if (a.size(0) != rows_ || out.size(0) != rows_ || a.scalar_type() != at::kFloat ||
        out.scalar_type() != at::kFloat || !row_major_matrix(a, k_) || !row_major_matrix(out, n_)) {
      fallback_.run(a, out);
      return;
    }
    cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, rows_, n_, k_, a.const_data_ptr<float>(),
                        std::max<int64_t>(a.stride(0), k_), packed_.const_data_ptr<float>(), n_, 0.0f,
                        out.mutable_data_ptr<float>(), std::max<int64_t>(out.stride(0), n_));
  }

 private:
  LibraryGemm fallback_;
  at::Tensor packed_;
  int64_t rows_, k_, n_;
};

}  // namespace

std::unique_ptr<FixedRightGemm> plan_packed_gemm(const at::Tensor& b, int64_t rows, int64_t calls) {
  if (!mkl_packed_api() || b.scalar_type() != at::kFloat || b.dim() != 2 || calls < kMinCalls || rows < 1 ||
      b.size(0) < 1 || b.size(1) < 1 || !fits_int(rows) || !fits_int(b.size(0)) || !fits_int(b.size(1)) ||
      !fits_int(b.stride(0)) || !fits_int(b.stride(1))) {
    return nullptr;
  }
  return std::make_unique<PackedGemm>(b, rows);
}

}  // namespace medkern::cpu
