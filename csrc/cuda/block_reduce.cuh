#pragma once
// Block-wide sums for kernels launched with kThreads threads per block.

namespace medkern {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Sums v over the block; every thread gets the total, added in a fixed order (deterministic).
// `shared` holds kWarps values.
template <typename U>
__device__ U block_sum(U v, U* shared) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffff, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  U total = U(0);
  for (int w = 0; w < kWarps; ++w) total += shared[w];
  return total;
}

}  // namespace medkern
