#pragma once
// minibatch_stddev's per-group math, shared by the CPU and CUDA kernels. x (N, C, H, W) is seen
// as StyleGAN2 does, x.reshape(G, M, F, C / F, H, W) with M = N / G: sample n = g * M + m is
// member g of group m. At one (m, channel k, pixel) the G members give
//   mean = sum_g x_g / G,   s = sqrt(sum_g (x_g - mean)^2 / G + 1e-8)
// and stat[m, f] is the average of s over the C / F channels of f and the H * W pixels:
// out[n, C + f, :, :] = stat[n % M, f]. Backward, with a[m, f] = (sum over the group's samples
// and pixels of grad[:, C + f]) / (C / F * H * W):
//   gx_g = grad_g + a * (x_g - mean) / (G * s)
// U is the arithmetic type (float for float, half and bfloat16; double for double).

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace medkern {

constexpr double kMinibatchStddevEps = 1e-8;

C10_HOST_DEVICE inline float minibatch_stddev_sqrt(float v) { return ::sqrtf(v); }
C10_HOST_DEVICE inline double minibatch_stddev_sqrt(double v) { return ::sqrt(v); }

// The shape and the strides (elements) of x, and of out / grad (same memory format).
struct MinibatchStddevShape {
  int64_t n, c, hw;      // N, C, H * W
  int64_t group;         // G
  int64_t groups;        // M = N / G
  int64_t num_channels;  // F
  int64_t x_sn, x_sc, x_shw;
  int64_t o_sn, o_sc, o_shw;

  C10_HOST_DEVICE int64_t channels_per_stat() const { return c / num_channels; }
};

// mean and s of the G members x[0], x[stride], ..., x[(G - 1) * stride].
template <typename U, typename scalar_t>
C10_HOST_DEVICE inline void minibatch_stddev_moments(const scalar_t* x, int64_t stride, int64_t group, U& mean,
                                                     U& stddev) {
  U sum(0);
  for (int64_t g = 0; g < group; ++g) sum += static_cast<U>(x[g * stride]);
  mean = sum / static_cast<U>(group);
  U sum_sq(0);
  for (int64_t g = 0; g < group; ++g) {
    const U d = static_cast<U>(x[g * stride]) - mean;
    sum_sq += d * d;
  }
  stddev = minibatch_stddev_sqrt(sum_sq / static_cast<U>(group) + static_cast<U>(kMinibatchStddevEps));
}

// gx of one member; a as above.
template <typename U>
C10_HOST_DEVICE inline U minibatch_stddev_grad(U g, U x, U mean, U stddev, U a, int64_t group) {
  return g + a * (x - mean) / (static_cast<U>(group) * stddev);
}

}  // namespace medkern
