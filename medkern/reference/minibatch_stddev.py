"""minibatch_stddev in plain PyTorch: StyleGAN2's discriminator layer, step by step."""

import torch

EPS = 1e-8  # inside the square root, as StyleGAN2 (csrc/common/minibatch_stddev.h)


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout of the op's outputs: channels_last if x is (and is not also contiguous)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int) -> torch.Tensor:
    """x (N, C, H, W) -> (N, C + F, H, W); arguments already checked (medkern.ops.minibatch_stddev).

    As StyleGAN2: x.reshape(G, N // G, F, C // F, H, W), G = min(group_size, N); sample n is in
    group n % (N // G).
    """
    n, c, h, w = x.shape
    f = num_channels
    if n == 0:
        return x.new_empty((0, c + f, h, w))
    g = min(group_size, n)
    y = x.reshape(g, n // g, f, c // f, h, w)  # [G, M, F, c, H, W]
    y = y - y.mean(dim=0)                     # subtract the group mean
    y = y.square().mean(dim=0)                # biased variance over the group
    y = (y + EPS).sqrt()                      # standard deviation
    y = y.mean(dim=[2, 3, 4])                 # [M, F]: average over channels and pixels
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
    return torch.cat([x, y], dim=1)
