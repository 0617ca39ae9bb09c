"""GAN losses on discriminator outputs (logits or critic scores).

A loss is an object with the :class:`GANLoss` interface; ``model/loss=<name>`` selects a shipped one
(``conf/model/loss/``) and ``model.loss._target_=my_lab.losses.MyLoss`` plugs in any importable class
that has it. Penalties on D's gradients are separate parts: ``dcgan.objective.penalties``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Goodfellow et al. 2014: -log D(x) - log(1 - D(G(z))), summed over the real and fake halves."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): the non-saturating generator loss (Goodfellow et al. 2014, sec. 3)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def d_loss_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Lim & Ye 2017 (Geometric GAN): E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_loss_hinge(fake: torch.Tensor) -> torch.Tensor:
    """Lim & Ye 2017: -E[D(G(z))]."""
    return -fake.mean()


def d_loss_lsgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Mao et al. 2017, targets a=0 (fake), b=1 (real): 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]."""
    return 0.5 * (real - 1.0).pow(2).mean() + 0.5 * fake.pow(2).mean()


def g_loss_lsgan(fake: torch.Tensor) -> torch.Tensor:
    """Mao et al. 2017, c=1: 1/2 E[(D(G(z)) - 1)^2]."""
    return 0.5 * (fake - 1.0).pow(2).mean()


def d_loss_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Arjovsky et al. 2017: the critic maximises E[D(x)] - E[D(G(z))], so it minimises the negation."""
    return fake.mean() - real.mean()


def g_loss_wasserstein(fake: torch.Tensor) -> torch.Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


class GANLoss:
    """The interface of ``model.loss``: D's loss on its outputs for a real and a fake batch, G's on a fake one.

    The outputs are D's raw ones, shape (N,) (or (N, 1)); a subclass sets ``logits = True`` where they are
    logits (TensorBoard's ``d/real`` and ``d/fake`` then show sigmoid probabilities). Keep constructor
    arguments plain (numbers, strings): they are saved in the checkpoint, which rebuilds the loss from them.
    """

    logits: bool = False

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BCE(GANLoss):
    """The paper's: binary cross-entropy for D, the non-saturating -log D(G(z)) for G (Goodfellow et al. 2014)."""

    logits = True

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_loss_bce(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return g_loss_nonsaturating(fake)


class Hinge(GANLoss):
    """Lim & Ye 2017 (Geometric GAN), as in SAGAN and BigGAN."""

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_loss_hinge(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return g_loss_hinge(fake)


class LSGAN(GANLoss):
    """Mao et al. 2017: least squares with targets 0 (fake) and 1 (real)."""

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_loss_lsgan(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return g_loss_lsgan(fake)


class Wasserstein(GANLoss):
    """Arjovsky et al. 2017's critic loss. It needs a Lipschitz D: add ``model/penalty=[gp]`` (Gulrajani et al.
    2017; ``experiment=wgan_gp``) or spectral norm."""

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return d_loss_wasserstein(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return g_loss_wasserstein(fake)
