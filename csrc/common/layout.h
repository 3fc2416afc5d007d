#pragma once
// Viewing a dense tensor of any memory layout as [outer, channels, inner] in memory order,
// where `channels` is the extent of one logical dim. Kernels that broadcast a per-channel
// vector (a bias) then run over memory linearly, whatever the layout (contiguous,
// channels_last, channels_last_3d, any permutation), and write outputs with the layout of x.

#include <ATen/ATen.h>

#include "channel_layout.h"

namespace medkern {

// `t` must be non-overlapping and dense. For channels > 1, every dim laid out inside `dim`
// contributes to its stride, so the stride is the inner extent.
inline ChannelLayout channel_layout(const at::Tensor& t, int64_t dim) {
  const int64_t channels = t.size(dim);
  const int64_t numel = t.numel();
  if (numel == 0) return {0, channels, 1};
  if (channels == 1) return {1, 1, numel};  // one long run: the bias is a scalar
  const int64_t inner = t.stride(dim);
  return {numel / (channels * inner), channels, inner};
}

// `t` with exactly the strides of `like` (a dense tensor of the same shape): `t` itself if it
// has them, else a copy. Inputs of odd layouts (sliced, expanded) thus take one copy.
inline at::Tensor with_layout_of(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  return at::empty_like(like).copy_(t);
}

}  // namespace medkern
