"""The embedded default data set: scikit-learn's 1,797 bundled 8x8 handwritten digits (no download)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dcgan.data.base import InMemoryDataModule


class DigitsDataModule(InMemoryDataModule):
    """UCI optical digits as shipped inside scikit-learn, upsampled (bilinear) from 8x8 to ``image_size``."""

    name = "digits"
    num_classes = 10

    def load_images(self) -> torch.Tensor:
        from sklearn.datasets import load_digits

        pixels = torch.from_numpy(load_digits().images).float().unsqueeze(1)  # (1797, 1, 8, 8) in [0, 16]
        big = F.interpolate(pixels, size=self.image_size, mode="bilinear", align_corners=False)
        return (big * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8)

    def load_labels(self) -> torch.Tensor:
        from sklearn.datasets import load_digits

        return torch.from_numpy(load_digits().target).long()
