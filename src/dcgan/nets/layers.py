"""Shared pieces of the DCGAN networks: the resolution arithmetic, the paper's init and minibatch stddev.

``MinibatchStdDev`` follows Karras et al. 2018 (ProGAN, arXiv 1710.10196, sec. 3) as StyleGAN2-ADA implements it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dcgan.errors import ArgumentError, check_int, is_int


def num_resolution_doublings(image_size: int) -> int:
    """Stride-2 layers between the 4x4 base and ``image_size`` (e.g. 64 -> 4)."""
    if not is_int(image_size) or image_size < 16 or image_size & (image_size - 1):
        raise ArgumentError("image_size", image_size, "a power of two >= 16 (16, 32, 64, ...)", 64)
    return int(math.log2(image_size)) - 2


def init_dcgan_weights(module: nn.Module) -> None:
    """Paper init: conv weights ~ N(0, 0.02), BatchNorm weight ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)


class MinibatchStdDev(nn.Module):
    """Appends one channel: how much the images of a group differ, so D can tell a collapsed batch (Karras et al. 2018).

    The batch splits into groups of G = min(group_size, B) images, as in ProGAN/StyleGAN: group j holds images
    j, j + B/G, j + 2B/G, ... Per group, the stddev over its G images of each feature at each position, averaged over
    channels and positions, is one scalar, appended as a constant (H, W) map to every image of that group.
    (B, C, H, W) -> (B, C + 1, H, W). B must be a multiple of G.
    """

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        check_int("group_size", group_size, 2, "images per group whose stddev D sees; ProGAN: 4", 4)
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.group_size, b)
        if b % g:
            raise ValueError(
                f"MinibatchStdDev: a batch of {b} images does not split into groups of {g} (group_size="
                f"{self.group_size}). Use a batch size that is a multiple of {g} (in training: data.batch_size, per "
                "device), or another group size."
            )
        y = x.float().reshape(g, b // g, c, h, w)  # (G, B/G, C, H, W): group j = images j, j + B/G, ...
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (B/G, C, H, W): stddev over each group
        y = y.mean(dim=(1, 2, 3)).to(x.dtype)  # (B/G,): one scalar per group
        y = y.reshape(1, b // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(b, 1, h, w)  # (B, 1, H, W)
        return torch.cat([x, y], dim=1)
