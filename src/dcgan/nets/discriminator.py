"""The DCGAN discriminator (Radford et al. 2015), with the options later GANs added to it."""

from __future__ import annotations

import torch
from torch import nn

from dcgan.errors import ArgumentError, check_int
from dcgan.nets.layers import init_dcgan_weights, num_resolution_doublings


class Discriminator(nn.Module):
    """Image -> stride-2 Conv blocks with LeakyReLU(0.2), BN on all but the first -> one logit.

    No Sigmoid: the losses take logits (BCEWithLogits), which stays accurate under mixed precision.
    ``norm="none"`` drops BatchNorm (a WGAN-GP critic must not mix the images of a batch: its penalty
    is per image); ``spectral_norm`` divides each conv's weight by its largest singular value, estimated
    by one power iteration per step (Miyato et al. 2018), so D is 1-Lipschitz per layer.
    With ``num_classes`` it is conditional with a projection head (Miyato & Koyama 2018):
    D(x, y) = psi(phi(x)) + <V_y, sum over positions of phi(x)>, phi the last hidden features.

    What wrappers and analysis use (any D may provide the same): ``features(x)``, ``num_classes``,
    ``mixes_batch``.
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
        check_int("channels", channels, 1, "input image channels: 1 gray, 3 RGB (a packing D: more)", 3)
        check_int("ndf", ndf, 1, "D's base filters", 64)
        if norm not in ("batch", "none"):
            raise ArgumentError("norm", norm, "batch or none", "none")
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
        self.mixes_batch = norm == "batch"  # BatchNorm: each image's score depends on the rest of its batch
        self.embed = nn.Embedding(num_classes, width) if num_classes else None
        init_dcgan_weights(self)
        if spectral_norm:
            for i, layer in enumerate(self.net):
                if isinstance(layer, nn.Conv2d):
                    self.net[i] = nn.utils.parametrizations.spectral_norm(layer)
            if self.embed is not None:
                self.embed = nn.utils.parametrizations.spectral_norm(self.embed)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden block's output (after its LeakyReLU), first to last: (B, ndf * 2^i, S / 2^(i+1), ...)."""
        out = []
        for layer in self.net[:-1]:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, channels, S, S) [and (B,) class indices] -> (B,) logits."""
        if self.embed is None:
            return self.net(x).flatten()
        if labels is None:
            raise ValueError("This discriminator is conditional (num_classes is set): pass the class labels.")
        features = self.net[:-1](x)  # (B, width, 4, 4)
        projection = (self.embed(labels).to(features.dtype) * features.sum(dim=(2, 3))).sum(dim=1)
        return self.net[-1](features).flatten() + projection
