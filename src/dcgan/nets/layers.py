"""Shared pieces of the DCGAN networks: the resolution arithmetic, the channel check and the paper's init."""

from __future__ import annotations

import math

from torch import nn

from dcgan.errors import ArgumentError, is_int


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
