"""PacGAN's packed discriminator (Lin, Khetan, Fanti & Oh 2018, arXiv 1712.04086): D judges m images at once."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dcgan.errors import ArgumentError, check_int


class Packed(nn.Module):
    """D on packs of ``packing`` images stacked along the channels: (B, C, H, W) -> (B/m, m*C, H, W) -> (B/m,).

    A pack of fakes shows their (lack of) variety at once, which penalises mode collapse (PacGAN). Images
    ``i*m .. i*m + m - 1`` form pack ``i``; real and fake batches are packed alike. The inner D keeps its
    architecture, only its first layer takes ``packing * channels`` inputs, as in the paper.

    ``inner`` is either a callable that builds the inner D from ``channels=`` (in config: its node with
    ``_partial_: true``; called with ``channels=packing * channels``), or an already built ``nn.Module`` whose
    first conv takes ``packing * channels`` inputs (checked). Conditional: a pack of m images carries its m
    labels; the inner D gets them as (B/m, m) (:class:`dcgan.nets.Discriminator` sums their class embeddings).

    The batch size (per device: ``data.batch_size``) must be a multiple of ``packing``; D then gives B/m scores
    per batch, which the losses average. ``features(x)`` are the inner D's features of the packs (B/m rows).
    """

    def __init__(self, inner: Callable[..., nn.Module] | nn.Module, packing: int = 2, channels: int = 3) -> None:
        super().__init__()
        check_int("packing", packing, 1, "images per pack; PacGAN: 2, 3 or 4; 1: the plain D", 2)
        check_int("channels", channels, 1, "channels of one image: 1 gray, 3 RGB", 3)
        if not isinstance(inner, nn.Module):
            if not callable(inner):
                raise ArgumentError(
                    "inner", type(inner).__name__, "a D node with _partial_: true (called with channels=), or an "
                    "nn.Module"
                )  # fmt: skip
            try:
                inner = inner(channels=packing * channels)
            except ArgumentError as err:
                raise err.at("inner") from None
        first = next((m for m in inner.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None and first.in_channels != packing * channels:
            raise ArgumentError(
                "inner", f"{type(inner).__name__} taking {first.in_channels} channels", f"a D whose first conv takes "
                f"packing x channels = {packing * channels} (or a _partial_: true node, which Packed builds so)"
            )  # fmt: skip
        self.inner, self.packing, self.channels = inner, packing, channels
        self.num_classes = getattr(inner, "num_classes", None)
        self.mixes_batch = packing > 1 or getattr(inner, "mixes_batch", False)  # a score depends on m images

    def _check(self, b: int) -> None:
        if b % self.packing:
            raise ValueError(
                f"Packed D: a batch of {b} images does not split into packs of packing={self.packing}. Make the "
                f"batch size a multiple of {self.packing} (in training: data.batch_size, per device)."
            )

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B/m, m*C, H, W): images i*m .. i*m + m - 1 stacked along the channels."""
        b, c, h, w = x.shape
        self._check(b)
        packed = x.reshape(b // self.packing, self.packing * c, h, w)  # a copy when x is channels_last
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            packed = packed.contiguous(memory_format=torch.channels_last)  # keep NHWC for the convs
        return packed

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The inner D's features of the packs: one row per pack (B/m), not per image."""
        return self.inner.features(self.pack(x))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) [and (B,) class indices] -> (B/m,) scores, one per pack."""
        packed = self.pack(x)
        if labels is None:
            return self.inner(packed)
        return self.inner(packed, labels.reshape(packed.size(0), self.packing))  # (B/m, m): each pack's classes
