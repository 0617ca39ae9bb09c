"""DiffAugment (Zhao et al. 2020, arXiv 2006.10738): differentiable augmentations of D's inputs.

The same random transforms are applied to real and generated images in D's step and to generated
images in G's step, so D cannot tell real from fake by the augmentation, and G's gradient flows back
through it. This is what lets a GAN train on a few thousand images (the embedded digits) without D
memorising them. Everything is written with tensor ops on the batch, so it runs on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dcgan.errors import ArgumentError

POLICIES = ("color", "translation", "cutout")


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype, generator=generator)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness +U(-0.5, 0.5); saturation x U(0, 2) around the pixel's channel mean; contrast x U(0.5, 1.5)."""
    x = x + (_uniform(x, generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(x, generator) * 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in x and y (whole pixels), filling with zeros."""
    b, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (b, 1, 1), device=x.device, generator=generator)
    dx = torch.randint(-max_dx, max_dx + 1, (b, 1, 1), device=x.device, generator=generator)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # one zero pixel all round, channels last
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous(memory_format=_format(x))


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one square of ``ratio`` x the image size per image, at a random centre (may overhang the edge)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device, generator=generator) - ch // 2
    left = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device, generator=generator) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


class DiffAugment(nn.Module):
    """Applies ``policy`` (names from ``POLICIES``, in order) in training mode; the identity in eval mode."""

    def __init__(self, policy: Sequence[str] | str | None = None) -> None:
        super().__init__()
        if isinstance(policy, str):
            policy = [p.strip() for p in policy.split(",") if p.strip()]
        self.policy = list(policy or [])
        unknown = [p for p in self.policy if p not in POLICIES]
        if unknown:
            raise ArgumentError(
                "policy",
                f"[{','.join(self.policy)}]",
                f"a list of {', '.join(POLICIES)} (unknown: {unknown}), or null for none",
                "[translation,cutout]",
            )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return x
        for name in self.policy:
            x = {"color": color, "translation": translation, "cutout": cutout}[name](x, generator=generator)
        return x

    def extra_repr(self) -> str:
        return ",".join(self.policy) or "off"
