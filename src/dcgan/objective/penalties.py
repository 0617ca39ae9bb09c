"""Penalties on D's gradients, each one part of the objective: ``model/penalty=[gp]``, ``[r1]``, ``[gp,r1]``.

A penalty declares its phase (``"D"``: added to D's loss, ``"G"``: to G's), its lazy interval (computed every
``interval``-th step of its phase and scaled by the interval, Karras et al. 2020) and what it needs from the
phase (``needs``): ``"real_grad"`` (D's real inputs requiring grad before D sees them) or ``"interpolates"``
(random real/fake mixes, drawn once per step for every penalty that asks). ``per_image`` says its value is only
meaningful when D scores each image on its own (no BatchNorm, packing, minibatch statistics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dcgan.errors import ArgumentError, check_int

PHASES = ("D", "G")
NEEDS = ("real_grad", "interpolates")


@dataclass
class PhaseInputs:
    """What a phase hands each of its due penalties."""

    critic: Callable[[torch.Tensor], torch.Tensor]  # D, with this batch's labels bound: (B, C, H, W) -> (B,)
    fake: torch.Tensor  # D's fake input after augmentation (detached in D's phase, G's graph in G's)
    fake_scores: torch.Tensor
    real: torch.Tensor | None = None  # D's real input after augmentation (D's phase only)
    real_scores: torch.Tensor | None = None
    interpolates: torch.Tensor | None = None  # requires grad; only when a due penalty needs "interpolates"
    generator: torch.Generator | None = None  # the step's seeded stream: draws stay reproducible on resume


class Penalty:
    """The interface of a ``model.penalty.<name>`` node; the objective adds ``coefficient * interval * value``."""

    phase: str = "D"
    needs: frozenset[str] = frozenset()
    per_image: bool = False
    differentiates_twice = False  # a gradient of a gradient (create_graph=True): no SyncBatchNorm in D then

    def __init__(self, weight: float, interval: int = 1) -> None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ArgumentError("weight", weight, "a weight >= 0 (0: off)", 1)
        check_int("interval", interval, 1, "steps of its phase between two terms; 1: every step", 1)
        self.weight, self.interval = float(weight), interval

    @property
    def coefficient(self) -> float:
        return self.weight

    def due(self, step: int) -> bool:
        """Whether the ``step``-th step of this penalty's phase (counted from 0) computes it."""
        return self.weight > 0 and step % self.interval == 0

    def __call__(self, inputs: PhaseInputs) -> torch.Tensor:
        raise NotImplementedError


def interpolates(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_hat = e x + (1 - e) G(z), e ~ U[0, 1] per image, requiring grad (Gulrajani et al. 2017)."""
    eps = torch.rand(real.size(0), 1, 1, 1, device=real.device, generator=generator, dtype=real.dtype)
    return (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], mixed: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at ``mixed`` (which must require grad)."""
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).float().norm(dim=1) - 1.0).pow(2).mean()


def r1_penalty(real_scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mescheder et al. 2018: E[||grad_x D(x)||^2] on real images (``real`` must require grad)."""
    (grad,) = torch.autograd.grad(real_scores.sum(), real, create_graph=True)
    return grad.flatten(1).float().pow(2).sum(dim=1).mean()


class GradientPenalty(Penalty):
    """WGAN-GP's two-sided penalty on real/fake interpolates (Gulrajani et al. 2017), weight 10 in the paper."""

    needs = frozenset({"interpolates"})
    per_image = True
    differentiates_twice = True

    def __init__(self, weight: float = 10.0, interval: int = 1) -> None:
        super().__init__(weight, interval)

    def __call__(self, inputs: PhaseInputs) -> torch.Tensor:
        return gradient_penalty(inputs.critic, inputs.interpolates)


class R1(Penalty):
    """gamma/2 E[||grad_x D(x)||^2] on real images (Mescheder et al. 2018); lazy, every 16th D step by default."""

    needs = frozenset({"real_grad"})
    per_image = True
    differentiates_twice = True

    def __init__(self, weight: float = 1.0, interval: int = 16) -> None:
        super().__init__(weight, interval)

    @property
    def coefficient(self) -> float:
        return 0.5 * self.weight  # gamma / 2

    def __call__(self, inputs: PhaseInputs) -> torch.Tensor:
        return r1_penalty(inputs.real_scores, inputs.real)
