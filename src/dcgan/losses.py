"""GAN losses on discriminator outputs (logits or critic scores), and the gradient penalties.

Each loss is a pair (D's loss on real and fake outputs, G's loss on fake outputs); ``LOSSES`` maps the
names that ``model.loss`` takes to them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


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


LossPair = tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
LOSSES: dict[str, LossPair] = {
    "bce": (d_loss_bce, g_loss_nonsaturating),
    "hinge": (d_loss_hinge, g_loss_hinge),
    "lsgan": (d_loss_lsgan, g_loss_lsgan),
    "wgan_gp": (d_loss_wasserstein, g_loss_wasserstein),
}


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gulrajani et al. 2017: E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat = e x + (1 - e) G(z), e ~ U[0, 1] per image."""
    eps = torch.rand(real.size(0), 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    mixed = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).float().norm(dim=1) - 1.0).pow(2).mean()


def r1_penalty(real_scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mescheder et al. 2018: E[||grad_x D(x)||^2] on real images (``real`` must require grad)."""
    (grad,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
    return grad.flatten(1).float().pow(2).sum(dim=1).mean()
