"""The DCGAN generator (Radford, Metz & Chintala 2015, arXiv 1511.06434, Figure 1)."""

from __future__ import annotations

import torch
from torch import nn

from dcgan.errors import check_int
from dcgan.nets.layers import init_dcgan_weights, num_resolution_doublings


class Generator(nn.Module):
    """z -> 4x4 feature map -> stride-2 ConvTranspose+BN+ReLU blocks -> Tanh image in [-1, 1].

    With ``num_classes`` it is conditional: a learned nz-wide embedding of the class is concatenated
    to z (Mirza & Osindero 2014), so G(z, y) draws class y.
    """

    def __init__(
        self, nz: int = 100, ngf: int = 64, image_size: int = 64, channels: int = 3, num_classes: int | None = None
    ) -> None:
        super().__init__()
        check_int("channels", channels, 1, "output image channels: 1 gray, 3 RGB (a packing D: more)", 3)
        check_int("nz", nz, 1, "the size of z", 100)
        check_int("ngf", ngf, 1, "G's base filters", 64)
        n_up = num_resolution_doublings(image_size)
        self.nz, self.num_classes = nz, num_classes
        self.embed = nn.Embedding(num_classes, nz) if num_classes else None
        width = ngf * 2 ** (n_up - 1)  # 64px: 8*ngf at 4x4, halved at each doubling
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz * (2 if num_classes else 1), width, 4, 1, 0, bias=False),  # (B, width, 4, 4)
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),  # spatial x2
                nn.BatchNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, nz) or (B, nz, 1, 1) [and (B,) class indices] -> (B, channels, image_size, image_size)."""
        z = z.reshape(z.size(0), self.nz)
        if self.embed is not None:
            if labels is None:
                raise ValueError("This generator is conditional (num_classes is set): pass the class labels.")
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])
