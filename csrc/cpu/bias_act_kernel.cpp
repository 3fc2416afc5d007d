// CPU kernels of medkern::bias_act and medkern::bias_act_backward, compiled once for each CPU
// capability (DEFAULT, AVX2, AVX512: see setup.py) into namespace medkern::cpu::CPU_CAPABILITY;
// csrc/cpu/bias_act.cpp picks one at run time. This file sees raw pointers only, no at::Tensor.
//
// x is walked in memory order as [outer, channels, inner] (csrc/common/layout.h), in tasks of
// at most kBlock elements, in parallel. Where inner is long (NCHW-like) a task is a stretch of
// one channel and the bias is a scalar; where it is short (channels_last-like) a task is a
// stretch of a row of channels * inner elements and the bias a vector, expanded once. The math
// is csrc/common/bias_act.h, evaluated on at::vec::Vectorized lanes. float16 and bfloat16 are
// converted to float in blocks. The backward also sums the bias gradient in the same pass, with
// a fixed split of the work, so results do not depend on the number of threads.

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "bias_act_kernel.h"
#include "vec_io.h"

namespace medkern::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kBlock = 2048;              // elements per task (and per conversion buffer)
constexpr int64_t kScalarBiasMinInner = 256;  // shorter inner extents take the vector-bias path
constexpr int64_t kMaxRowChunks = 32;         // row chunks of the bias-gradient accumulation
constexpr int64_t kMaxAccElements = 1 << 22;  // bound on that accumulator's size

// One task's element range and its bias: `bias_vec` (aligned with the range) or `bias_scalar`.
template <typename U>
struct Span {
  int64_t offset;
  int64_t length;
  const U* bias_vec;
  U bias_scalar;
};

// How x is cut into tasks. A row is one channel's inner stretch (scalar bias) or, on the
// vector-bias path, `group` consecutive outer indices' channels * inner elements, so that short
// rows (channels_last) still make tasks of about kBlock elements. The last row may be short.
struct Tiling {
  int64_t rows;
  int64_t row_length;
  int64_t blocks_per_row;
  int64_t numel;
  bool scalar_bias;

  int64_t tasks() const { return rows * blocks_per_row; }
};

Tiling make_tiling(const ChannelLayout& l) {
  const int64_t numel = l.outer * l.channels * l.inner;
  const bool scalar_bias = l.inner >= kScalarBiasMinInner || l.channels == 1;
  int64_t rows = l.outer * l.channels, row_length = l.inner;
  if (!scalar_bias) {
    const int64_t period = l.channels * l.inner;
    const int64_t group = std::max<int64_t>(1, kBlock / period);
    rows = (l.outer + group - 1) / group;
    row_length = group * period;
  }
  const int64_t blocks = (row_length + kBlock - 1) / kBlock;
  return {rows, row_length, blocks, numel, scalar_bias};
}

// The channel of element j of a row on the vector-bias path.
inline int64_t channel_in_row(int64_t j, const ChannelLayout& l) { return (j / l.inner) % l.channels; }

// The bias in arithmetic type U, as each task's span needs it: a scalar per row on the
// scalar-bias path; on the vector-bias path a table along the row, or, for rows too long to
// tabulate (few outer indices, many channels), a per-span stretch written into a buffer.
template <typename U>
class Bias {
 public:
  template <typename scalar_t>
  Bias(const scalar_t* b, const ChannelLayout& l, const Tiling& t) : l_(l), t_(t), per_channel_(l.channels, U(0)) {
    if (b != nullptr) {
      for (int64_t c = 0; c < l.channels; ++c) per_channel_[c] = static_cast<U>(b[c]);
    }
    if (!t.scalar_bias && t.row_length <= kMaxRowTable) {
      row_.resize(t.row_length);
      fill(row_.data(), 0, t.row_length);
    }
  }

  // Task `task`'s span (length <= 0 past the end of a short last row). `buf`, kBlock long,
  // may be used to hold the span's bias.
  Span<U> span(int64_t task, U* buf) const {
    const int64_t row = task / t_.blocks_per_row;
    const int64_t start = (task % t_.blocks_per_row) * kBlock;
    const int64_t offset = row * t_.row_length + start;
    const int64_t length = std::min({kBlock, t_.row_length - start, t_.numel - offset});
    if (t_.scalar_bias) return {offset, length, nullptr, per_channel_[row % l_.channels]};
    if (!row_.empty()) return {offset, length, row_.data() + start, U(0)};
    if (length > 0) fill(buf, start, length);
    return {offset, length, buf, U(0)};
  }

 private:
  static constexpr int64_t kMaxRowTable = 1 << 16;

  // Writes the bias of row elements [start, start + n) to out, a run per channel.
  void fill(U* out, int64_t start, int64_t n) const {
    for (int64_t j = 0; j < n;) {
      const int64_t run = std::min(n - j, l_.inner - (start + j) % l_.inner);
      std::fill(out + j, out + j + run, per_channel_[channel_in_row(start + j, l_)]);
      j += run;
    }
  }

  ChannelLayout l_;
  Tiling t_;
  std::vector<U> per_channel_;
  std::vector<U> row_;
};

// y = bias_act_forward(x + bias) over one span.
template <Act A, typename scalar_t, typename U>
void forward_span(const scalar_t* x, scalar_t* y, const Span<U>& s, const BiasActParams<U>& p) {
  using V = Vec<U>;
  if (s.length <= 0) return;
  U xbuf[kBlock], ybuf[kBlock];
  const U* xs = load_opmath(x + s.offset, s.length, xbuf);
  U* ys = out_opmath<U>(y + s.offset, ybuf);
  const V bias_scalar(s.bias_scalar);
  for (int64_t i = 0; i < s.length; i += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), s.length - i);
    const V bias = s.bias_vec ? V::loadu(s.bias_vec + i, n) : bias_scalar;
    bias_act_forward<A>(V::loadu(xs + i, n) + bias, p).store(ys + i, n);
  }
  store_opmath(ys, y + s.offset, s.length);
}

// gx = bias_act_grad<Order>(g, x + bias) over one span. The bias gradient is accumulated
// lane-wise into `acc_vec` (aligned with the span) if given, else summed into `acc`.
template <Act A, int Order, typename scalar_t, typename U>
void grad_span(const scalar_t* g, const scalar_t* x, scalar_t* gx, const Span<U>& s, const BiasActParams<U>& p,
               U* acc_vec, Vec<U>& acc) {
  using V = Vec<U>;
  if (s.length <= 0) return;
  U gbuf[kBlock], xbuf[kBlock], obuf[kBlock];
  const U* gs = load_opmath(g + s.offset, s.length, gbuf);
  const U* xs = load_opmath(x + s.offset, s.length, xbuf);
  U* os = out_opmath<U>(gx + s.offset, obuf);
  const V bias_scalar(s.bias_scalar);
  for (int64_t i = 0; i < s.length; i += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), s.length - i);
    const V bias = s.bias_vec ? V::loadu(s.bias_vec + i, n) : bias_scalar;
    // lanes past n load as zeros, so their gradient is zero and the sums are unaffected
    const V d = bias_act_grad<A, Order>(V::loadu(gs + i, n), V::loadu(xs + i, n) + bias, p);
    d.store(os + i, n);
    if (acc_vec) {
      (V::loadu(acc_vec + i, n) + d).store(acc_vec + i, n);
    } else {
      acc = acc + d;
    }
  }
  store_opmath(os, gx + s.offset, s.length);
}

// Tasks a thread takes at least: tensors under 16 blocks run on the calling thread alone.
constexpr int64_t kTaskGrain = 16;

template <Act A, typename scalar_t>
void forward_kernel(const BiasActPointers& ptr, const ChannelLayout& l, const BiasActArgs& args) {
  using U = at::opmath_type<scalar_t>;
  const Tiling t = make_tiling(l);
  const Bias<U> bias(static_cast<const scalar_t*>(ptr.b), l, t);
  const BiasActParams<U> p = args.params<U>();
  const auto* xp = static_cast<const scalar_t*>(ptr.x);
  auto* yp = static_cast<scalar_t*>(ptr.out);
  at::parallel_for(0, t.tasks(), kTaskGrain, [&](int64_t begin, int64_t end) {
    U bias_buf[kBlock];
    for (int64_t task = begin; task < end; ++task) forward_span<A>(xp, yp, bias.span(task, bias_buf), p);
  });
}

template <Act A, int Order, typename scalar_t>
void grad_kernel(const BiasActPointers& ptr, const ChannelLayout& l, const BiasActArgs& args) {
  using U = at::opmath_type<scalar_t>;
  const Tiling t = make_tiling(l);
  const Bias<U> bias(static_cast<const scalar_t*>(ptr.b), l, t);
  const BiasActParams<U> p = args.params<U>();
  const auto* gp = static_cast<const scalar_t*>(ptr.g);
  const auto* xp = static_cast<const scalar_t*>(ptr.x);
  auto* op = static_cast<scalar_t*>(ptr.out);
  const bool want_bias_grad = ptr.bias_grad != nullptr;
  std::vector<U> per_channel(l.channels, U(0));

  if (t.scalar_bias) {
    // one partial sum per task, added per channel in task order
    std::vector<U> partial(want_bias_grad ? t.tasks() : 0, U(0));
    at::parallel_for(0, t.tasks(), kTaskGrain, [&](int64_t begin, int64_t end) {
      U bias_buf[kBlock];
      for (int64_t task = begin; task < end; ++task) {
        Vec<U> acc(U(0));
        grad_span<A, Order>(gp, xp, op, bias.span(task, bias_buf), p, static_cast<U*>(nullptr), acc);
        if (want_bias_grad) partial[task] = sum_lanes(acc);
      }
    });
    for (int64_t task = 0; want_bias_grad && task < t.tasks(); ++task) {
      per_channel[(task / t.blocks_per_row) % l.channels] += partial[task];
    }
  } else {
    // rows split into a fixed number of chunks, each summing lane-wise into its own row-long
    // accumulator; a task is one (chunk, block) pair, so no two tasks write the same lanes
    const int64_t chunks =
        want_bias_grad ? std::max<int64_t>(1, std::min({t.rows, kMaxRowChunks, kMaxAccElements / t.row_length}))
                       : std::max<int64_t>(1, t.rows);
    const int64_t rows_per_chunk = (t.rows + chunks - 1) / chunks;
    std::vector<U> acc(want_bias_grad ? chunks * t.row_length : 0, U(0));
    at::parallel_for(0, chunks * t.blocks_per_row, 1, [&](int64_t begin, int64_t end) {
      for (int64_t job = begin; job < end; ++job) {
        const int64_t chunk = job / t.blocks_per_row, block = job % t.blocks_per_row;
        const int64_t row_end = std::min(t.rows, (chunk + 1) * rows_per_chunk);
        for (int64_t row = chunk * rows_per_chunk; row < row_end; ++row) {
          U bias_buf[kBlock];
          const Span<U> s = bias.span(row * t.blocks_per_row + block, bias_buf);
          Vec<U> unused(U(0));
          U* acc_vec = want_bias_grad ? acc.data() + chunk * t.row_length + block * kBlock : nullptr;
          grad_span<A, Order>(gp, xp, op, s, p, acc_vec, unused);
        }
      }
    });
    for (int64_t chunk = 0; want_bias_grad && chunk < chunks; ++chunk) {
      for (int64_t j = 0; j < t.row_length; ++j) per_channel[channel_in_row(j, l)] += acc[chunk * t.row_length + j];
    }
  }
  if (want_bias_grad) {
    auto* gbp = static_cast<scalar_t*>(ptr.bias_grad);
    for (int64_t c = 0; c < l.channels; ++c) gbp[c] = static_cast<scalar_t>(per_channel[c]);
  }
}

void forward(at::ScalarType dtype, const BiasActPointers& ptr, const ChannelLayout& l, const BiasActArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::bias_act", [&] {
    dispatch_act(args.act, [&](auto a) { forward_kernel<decltype(a)::value, scalar_t>(ptr, l, args); });
  });
}

void grad(at::ScalarType dtype, int64_t order, const BiasActPointers& ptr, const ChannelLayout& l,
          const BiasActArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "medkern::bias_act_backward", [&] {
    dispatch_act(args.act, [&](auto a) {
      constexpr Act A = decltype(a)::value;
      if (order == 1) {
        grad_kernel<A, 1, scalar_t>(ptr, l, args);
      } else {
        grad_kernel<A, 2, scalar_t>(ptr, l, args);
      }
    });
  });
}

}  // namespace

BiasActKernels bias_act_kernels() { return {&forward, &grad}; }

}  // namespace medkern::cpu::CPU_CAPABILITY
