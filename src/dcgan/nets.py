"""DCGAN generator and discriminator in plain PyTorch (Radford, Metz & Chintala 2015, arXiv 1511.06434)."""

from __future__ import annotations

import math

import torch
from torch import nn


def num_resolution_doublings(image_size: int) -> int:
    """Stride-2 layers between the 4x4 base and ``image_size`` (e.g. 64 -> 4)."""
    if image_size < 16 or image_size & (image_size - 1):
        raise ValueError(
            f"image_size={image_size} is not supported: DCGAN needs a power of two >= 16 "
            "(16, 32, 64, 128, ...). Set data.image_size to one of those."
        )
    return int(math.log2(image_size)) - 2


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(
            f"channels={channels} is not supported: expected 1 (gray) or 3 (RGB). Set data.channels to 1 or 3."
        )


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


class Generator(nn.Module):
    """z -> 4x4 feature map -> stride-2 ConvTranspose+BN+ReLU blocks -> Tanh image in [-1, 1].

    With ``num_classes`` it is conditional: a learned nz-wide embedding of the class is concatenated
    to z (Mirza & Osindero 2014), so G(z, y) draws class y.
    """

    def __init__(
        self, nz: int = 100, ngf: int = 64, image_size: int = 64, channels: int = 3, num_classes: int | None = None
    ) -> None:
        super().__init__()
        _check_channels(channels)
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


class Discriminator(nn.Module):
    """Image -> stride-2 Conv blocks with LeakyReLU(0.2), BN on all but the first -> one logit.

    No Sigmoid: the losses take logits (BCEWithLogits), which stays accurate under mixed precision.
    ``norm="none"`` drops BatchNorm (a WGAN-GP critic must not mix the images of a batch: its penalty
    is per image); ``spectral_norm`` divides each conv's weight by its largest singular value, estimated
    by one power iteration per step (Miyato et al. 2018), so D is 1-Lipschitz per layer.
    With ``num_classes`` it is conditional with a projection head (Miyato & Koyama 2018):
    D(x, y) = psi(phi(x)) + <V_y, sum over positions of phi(x)>, phi the last hidden features.
    """

    def __init__(
        self,
        ndf: int = 64,
        image_size: int = 64,
        channels: int = 3,
        norm: str = "batch",
        spectral_norm: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        _check_channels(channels)
        if norm not in ("batch", "none"):
            raise ValueError(f"discriminator norm={norm}: expected batch or none.")
        n_down = num_resolution_doublings(image_size)
        layers: list[nn.Module] = [
            nn.Conv2d(channels, ndf, 4, 2, 1, bias=False),  # (B, ndf, S/2, S/2)
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = ndf
        for _ in range(n_down - 1):
            layers.append(nn.Conv2d(width, width * 2, 4, 2, 1, bias=norm == "none"))  # spatial /2
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, width) if num_classes else None
        init_dcgan_weights(self)
        if spectral_norm:
            for i, layer in enumerate(self.net):
                if isinstance(layer, nn.Conv2d):
                    self.net[i] = nn.utils.parametrizations.spectral_norm(layer)
            if self.embed is not None:
                self.embed = nn.utils.parametrizations.spectral_norm(self.embed)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, channels, S, S) [and (B,) class indices] -> (B,) logits."""
        if self.embed is None:
            return self.net(x).flatten()
        if labels is None:
            raise ValueError("This discriminator is conditional (num_classes is set): pass the class labels.")
        features = self.net[:-1](x)  # (B, width, 4, 4)
        projection = (self.embed(labels).to(features.dtype) * features.sum(dim=(2, 3))).sum(dim=1)
        return self.net[-1](features).flatten() + projection
