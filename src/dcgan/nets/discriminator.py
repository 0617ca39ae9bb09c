"""The DCGAN discriminator (Radford et al. 2015), with the options later GANs added to it."""

from __future__ import annotations

import torch
from torch import nn

from dcgan.errors import ArgumentError, check_int
from dcgan.nets.layers import MinibatchStdDev, init_dcgan_weights, num_resolution_doublings


class Discriminator(nn.Module):
    """Image -> stride-2 Conv blocks with LeakyReLU(0.2), BN on all but the first -> one logit.

    No Sigmoid: the losses take logits (BCEWithLogits), which stays accurate under mixed precision.
    ``norm="none"`` drops BatchNorm (a WGAN-GP critic must not mix the images of a batch: its penalty
    is per image); ``spectral_norm`` divides each conv's weight by its largest singular value, estimated
    by one power iteration per step (Miyato et al. 2018), so D is 1-Lipschitz per layer.
    With ``num_classes`` it is conditional with a projection head (Miyato & Koyama 2018):
    D(x, y) = psi(phi(x)) + <V_y, sum over positions of phi(x)>, phi the last hidden features. ``labels`` may
    also be (B, m), the m classes of each of B packs of images (:class:`dcgan.nets.Packed`): the projection is then
    <sum_i V_{y_i}, sum over positions of phi(x)>.
    ``minibatch_std=G`` appends, before the last conv, a channel with the stddev of groups of G images
    (:class:`MinibatchStdDev`, Karras et al. 2018): psi sees how varied the batch is, while phi, and so the
    projection and ``features(x)``, stay per image. The batch size must then be a multiple of min(G, B).

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
        minibatch_std: int | None = None,
    ) -> None:
        super().__init__()
        check_int("channels", channels, 1, "input image channels: 1 gray, 3 RGB (a packing D: more)", 3)
        check_int("ndf", ndf, 1, "D's base filters", 64)
        if norm not in ("batch", "none"):
            raise ArgumentError("norm", norm, "batch or none", "none")
        if minibatch_std is not None:
            check_int("minibatch_std", minibatch_std, 2, "images per stddev group, ProGAN: 4; null: off", 4)
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
        head_in = width + 1 if minibatch_std is not None else width  # + the minibatch stddev channel
        layers.append(nn.Conv2d(head_in, 1, 4, 1, 0, bias=False))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        self.mbstd = MinibatchStdDev(minibatch_std) if minibatch_std is not None else None
        self.num_classes = num_classes
        # BatchNorm or minibatch stddev: each image's score depends on the rest of its batch
        self.mixes_batch = norm == "batch" or self.mbstd is not None
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
        """(B, channels, S, S) [and (B,) class indices, or (B, m): a pack's m classes] -> (B,) logits."""
        phi = self.net[:-1](x)  # (B, width, 4, 4)
        h = self.mbstd(phi) if self.mbstd is not None else phi  # (B, width + 1, 4, 4) with minibatch stddev
        scores = self.net[-1](h).flatten()  # (B,)
        if self.embed is None:
            return scores
        if labels is None:
            raise ValueError("This discriminator is conditional (num_classes is set): pass the class labels.")
        if labels.dim() not in (1, 2) or labels.size(0) != x.size(0):
            raise ValueError(
                f"labels of shape {tuple(labels.shape)} for {x.size(0)} images: expected ({x.size(0)},) class "
                f"indices, or ({x.size(0)}, m) for packs of m images."
            )
        embedded = self.embed(labels).to(phi.dtype)  # (B, width), or (B, m, width) for packs
        if embedded.dim() == 3:
            embedded = embedded.sum(dim=1)  # a pack of m images: sum_i V_{y_i}
        return scores + (embedded * phi.sum(dim=(2, 3))).sum(dim=1)
