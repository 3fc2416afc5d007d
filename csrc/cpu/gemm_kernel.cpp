// medkern's own float32 GEMM for a fixed right-hand matrix (FixedRightGemm), compiled once per
// CPU capability. MKL runs a generic code path on CPUs it does not recognise as Intel's: on an
// AMD EPYC with AVX-512 its sgemm reaches about 110-200 GFLOP/s where oneDNN's kernels (torch's
// convolutions and its LSTM) reach about 400. csrc/cpu/rnn.cpp uses this one there.
//
// b (K x N) is packed once into panels of kPanel columns, each K rows of kPanel floats (zeros past
// N). A task multiplies kRows rows of a by one panel, its kRows x kPanel results held in vector
// registers while k runs over K: per k, two vector loads of the panel and, per row, one broadcast
// and two fused multiply-adds. Each result sums its K products in order, so results do not depend
// on the thread count. Made for an RNN step's products (a: B rows of h, K and N up to a few
// thousand): a is read in place, fastest with unit column stride, and K is not blocked, so a panel
// should fit the core's L2 cache.

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <vector>

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>  // x86 only: the portable build (any platform) does not include it
#endif

#include "gemm_kernel.h"

namespace medkern::cpu::CPU_CAPABILITY {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
namespace {

using V = at::vec::Vectorized<float>;
constexpr int64_t kPanel = 2 * V::size();
// Rows per task: their 2 * kRows accumulators plus the panel's two vectors and a broadcast fit
// the 32 vector registers of AVX-512, or the 16 of AVX2 with six rows.
constexpr int64_t kRows = V::size() == 16 ? 8 : 6;
constexpr int64_t kTaskFlops = int64_t{1} << 21;  // a thread takes at least this much work

// The capability's vector register as the compiler's type: arrays of at::vec::Vectorized would
// be written back to memory on every step of k.
#if defined(CPU_CAPABILITY_AVX512)
using Reg = __m512;
inline Reg reg_zero() { return _mm512_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm512_loadu_ps(p); }
inline Reg reg_broadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
#else
using Reg = __m256;
inline Reg reg_zero() { return _mm256_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm256_loadu_ps(p); }
inline Reg reg_broadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
#endif
static_assert(sizeof(Reg) == sizeof(float) * V::size());

// a's element (r, k) at a + r * row + k * col: any strides (an RNN's weight gradient reads the
// transpose of its [T * B, G] input gradients).
struct Strided {
  const float* a;
  int64_t row, col;
};

// out[0:R, 0:width] = a[0:R, :] @ panel, or += with `accumulate`.
template <int64_t R>
void multiply_rows(const Strided& a, const float* panel, int64_t k_count, float* out, int64_t ldo, int64_t width,
                   bool accumulate) {
  const int64_t first = std::min<int64_t>(width, V::size()), second = width - first;
  Reg lo[R], hi[R];
  for (int64_t r = 0; r < R; ++r) {
    lo[r] = accumulate ? Reg(V::loadu(out + r * ldo, first)) : reg_zero();
    hi[r] = accumulate && second > 0 ? Reg(V::loadu(out + r * ldo + V::size(), second)) : reg_zero();
  }
  for (int64_t k = 0; k < k_count; ++k) {
    const Reg b0 = reg_load(panel + k * kPanel), b1 = reg_load(panel + k * kPanel + V::size());
    const float* column = a.a + k * a.col;
    for (int64_t r = 0; r < R; ++r) {
      const Reg ar = reg_broadcast(column + r * a.row);
      lo[r] = reg_fma(ar, b0, lo[r]);
      hi[r] = reg_fma(ar, b1, hi[r]);
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    V(lo[r]).store(out + r * ldo, first);
    if (second > 0) V(hi[r]).store(out + r * ldo + V::size(), second);
  }
}

template <int64_t R = kRows>
void multiply_tail(int64_t rows, const Strided& a, const float* panel, int64_t k_count, float* out, int64_t ldo,
                   int64_t width, bool accumulate = false) {
  if constexpr (R > 1) {
    if (rows < R) return multiply_tail<R - 1>(rows, a, panel, k_count, out, ldo, width, accumulate);
  }
  multiply_rows<R>(a, panel, k_count, out, ldo, width, accumulate);
}

// Rows [k0, k0 + depth) and columns [0, n) of b (element (k, c) at b + k * row + c * col) as panels
// of kPanel columns, panel j at packed + j * depth * kPanel, zeros past n.
void pack_panels(const float* b, int64_t row, int64_t col, int64_t k0, int64_t depth, int64_t n, float* packed) {
  const int64_t panels = (n + kPanel - 1) / kPanel;
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t n0 = j * kPanel, width = std::min(kPanel, n - n0);
      float* p = packed + j * depth * kPanel;
      for (int64_t k = 0; k < depth; ++k) {
        const float* source = b + (k0 + k) * row + n0 * col;
        for (int64_t w = 0; w < width; ++w) p[k * kPanel + w] = source[w * col];
        std::fill(p + k * kPanel + width, p + (k + 1) * kPanel, 0.0f);
      }
    }
  });
}

class VectorGemm final : public FixedRightGemm {
 public:
  explicit VectorGemm(const at::Tensor& b) : fallback_(b), k_(b.size(0)), n_(b.size(1)) {
    packed_ = at::empty({(n_ + kPanel - 1) / kPanel * k_ * kPanel}, b.options());
    pack_panels(b.const_data_ptr<float>(), b.stride(0), b.stride(1), 0, k_, n_, packed_.mutable_data_ptr<float>());
  }

  void run(const at::Tensor& a, const at::Tensor& out) const override {
    // out's rows with unit column stride; anything else: the library
    if (a.scalar_type() != at::kFloat || out.scalar_type() != at::kFloat || a.dim() != 2 || out.dim() != 2 ||
        a.size(1) != k_ || out.size(1) != n_ || out.size(0) != a.size(0) || (n_ > 1 && out.stride(1) != 1)) {
      fallback_.run(a, out);
      return;
    }
    const int64_t m = a.size(0), ldo = out.stride(0);
    const int64_t panels = (n_ + kPanel - 1) / kPanel, blocks = (m + kRows - 1) / kRows;
    const float* ap = a.const_data_ptr<float>();
    const float* pp = packed_.const_data_ptr<float>();
    float* op = out.mutable_data_ptr<float>();
    const int64_t task_flops = 2 * kRows * kPanel * std::max<int64_t>(k_, 1);
    // panel-major: a thread's consecutive tasks reuse one panel while it is in cache
    at::parallel_for(0, panels * blocks, std::max<int64_t>(1, kTaskFlops / task_flops), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t j = t / blocks, i = t % blocks, r0 = i * kRows, n0 = j * kPanel;
        const Strided rows{ap + r0 * a.stride(0), a.stride(0), a.stride(1)};
        multiply_tail(std::min(kRows, m - r0), rows, pp + j * k_ * kPanel, k_, op + r0 * ldo + n0, ldo,
                      std::min(kPanel, n_ - n0));
      }
    });
  }

 private:
  LibraryGemm fallback_;  // for calls the packed product does not take
  at::Tensor packed_;
  int64_t k_, n_;
};

// Packing b (a pass over it, with strided reads for a transposed weight) pays for itself once a
// few rows are multiplied by it.
constexpr int64_t kMinRows = kRows;

std::unique_ptr<FixedRightGemm> plan(const at::Tensor& b, int64_t rows, int64_t calls) {
  if (b.scalar_type() != at::kFloat || b.dim() != 2 || rows < 1 || rows * calls < kMinRows || b.size(0) < 1 ||
      b.size(1) < 1) {
    return nullptr;
  }
  return std::make_unique<VectorGemm>(b);
}

// k per block of the transposed product: a block's panels (kDepth x N floats) stay in L2 while
// every row block of out passes over them, and a row block's packed a (kDepth x kRows) in L1.
constexpr int64_t kDepth = 256;

// out (M x N) = a.T @ b for a (K x M) and b (K x N), row-major with unit column stride: a weight
// gradient, summed over K = steps x batch. K runs in blocks of kDepth; each row block of out packs
// its rows of a.T for the block (reading a row by row, not down its columns) and adds the block's
// products to out, so every result sums its K products in order whatever the thread count.
void transposed_product(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k_count, int64_t m,
                        int64_t n, float* out, int64_t ldo) {
  if (k_count == 0 || m == 0 || n == 0) {  // nothing to sum (zeros), or nothing to write
    for (int64_t r = 0; r < m; ++r) std::fill(out + r * ldo, out + r * ldo + n, 0.0f);
    return;
  }
  const int64_t panels = (n + kPanel - 1) / kPanel, blocks = (m + kRows - 1) / kRows;
  std::vector<float> packed(panels * kDepth * kPanel);
  for (int64_t k0 = 0; k0 < k_count; k0 += kDepth) {
    const int64_t depth = std::min(kDepth, k_count - k0);
    pack_panels(b, ldb, 1, k0, depth, n, packed.data());
    const int64_t task_flops = 2 * kRows * depth * panels * kPanel;
    at::parallel_for(0, blocks, std::max<int64_t>(1, kTaskFlops / task_flops), [&](int64_t begin, int64_t end) {
      float rows_of_a[kDepth * kRows];  // [depth, kRows]: a.T's rows r0.. as columns
      for (int64_t i = begin; i < end; ++i) {
        const int64_t r0 = i * kRows, rows = std::min(kRows, m - r0);
        for (int64_t k = 0; k < depth; ++k) {
          std::copy(a + (k0 + k) * lda + r0, a + (k0 + k) * lda + r0 + rows, rows_of_a + k * kRows);
        }
        for (int64_t j = 0; j < panels; ++j) {
          multiply_tail(rows, Strided{rows_of_a, 1, kRows}, packed.data() + j * depth * kPanel, depth,
                        out + r0 * ldo + j * kPanel, ldo, std::min(kPanel, n - j * kPanel), k0 > 0);
        }
      }
    });
  }
}

}  // namespace

FixedRightGemmPlanner vector_gemm_planner() { return &plan; }
TransposedGemm vector_transposed_gemm() { return &transposed_product; }
#else
// the portable build has no vector registers to use: no faster than the library
FixedRightGemmPlanner vector_gemm_planner() { return nullptr; }
TransposedGemm vector_transposed_gemm() { return nullptr; }
#endif

}  // namespace medkern::cpu::CPU_CAPABILITY
