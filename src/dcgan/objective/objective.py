"""The objective as parts: a loss, named penalties and an augmentation of D's inputs, asked for each phase's terms.

As in StyleGAN2-ADA's loss phases, the training step never learns which loss or penalty it runs: it asks
:meth:`Objective.d_phase` for D's loss and :meth:`Objective.g_phase` for G's, and logs what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from dcgan.errors import ArgumentError
from dcgan.objective.penalties import NEEDS, PHASES, PhaseInputs, interpolates

Critic = Callable[[torch.Tensor], torch.Tensor]  # D with the batch's labels bound: images -> (B,) scores


class NoAugment(nn.Module):
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x


@dataclass
class Terms:
    """A phase's loss (``total``, what is backpropagated) and what to log (detached), e.g. ``loss/d``, ``loss/gp``."""

    total: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """``loss`` (a :class:`dcgan.objective.losses.GANLoss`), ``penalties`` by name, and ``augment``: a module whose
    ``forward(images, generator)`` transforms every input of D alike (DiffAugment), the identity by default."""

    def __init__(
        self, loss: object, penalties: Mapping[str, object] | None = None, augment: nn.Module | None = None
    ) -> None:
        super().__init__()
        if not all(callable(getattr(loss, m, None)) for m in ("d_loss", "g_loss")):
            raise ArgumentError(
                "loss", type(loss).__name__, "the GANLoss interface (dcgan.objective.losses): "
                "d_loss(real_scores, fake_scores) and g_loss(fake_scores)"
            )  # fmt: skip
        self.loss = loss
        self.penalties = dict(penalties or {})
        for name, penalty in self.penalties.items():
            phase, needs = getattr(penalty, "phase", None), set(getattr(penalty, "needs", ()))
            if not callable(penalty) or not callable(getattr(penalty, "due", None)) or phase not in PHASES:
                raise ArgumentError(
                    f"penalty.{name}",
                    type(penalty).__name__,
                    "the Penalty interface (dcgan.objective.penalties): "
                    f"phase in {PHASES}, needs, due(step), coefficient, interval and __call__(inputs)",
                )
            if needs - set(NEEDS) or (phase == "G" and needs):
                raise ArgumentError(f"penalty.{name}.needs", sorted(needs), f"a subset of {NEEDS} (D's phase only)")
        self.augment = augment if augment is not None else NoAugment()
        if not isinstance(self.augment, nn.Module):
            raise ArgumentError(
                "augment",
                type(augment).__name__,
                "a torch.nn.Module whose forward(images, generator) returns the "
                "augmented images (like dcgan.objective.augment.DiffAugment)",
            )

    @property
    def logits(self) -> bool:
        """Whether D's outputs are logits (``d/real``, ``d/fake`` are then logged as probabilities)."""
        return bool(getattr(self.loss, "logits", False))

    def per_image_penalties(self) -> list[str]:
        return [name for name, p in self.penalties.items() if getattr(p, "per_image", False) and p.weight]

    def _due(self, phase: str, step: int) -> list[tuple[str, object]]:
        return [(n, p) for n, p in self.penalties.items() if p.phase == phase and p.due(step)]

    def _add(self, total: torch.Tensor, due: list, inputs: PhaseInputs, logs: dict) -> torch.Tensor:
        for name, penalty in due:
            value = penalty(inputs)
            logs[f"loss/{name}"] = value.detach()
            total = total + penalty.coefficient * penalty.interval * value  # lazy: scaled up to match every step
        return total

    def d_phase(
        self, critic: Critic, real: torch.Tensor, fake: torch.Tensor, step: int, generator: torch.Generator | None
    ) -> Terms:
        """D's loss on a real batch and a detached fake one, at D's ``step``-th step (from 0)."""
        due = self._due("D", step)
        needs = set().union(*(p.needs for _, p in due))
        real, fake = self.augment(real, generator), self.augment(fake, generator)
        if "real_grad" in needs:
            real = real.detach().requires_grad_(True)
        real_scores, fake_scores = critic(real), critic(fake)
        total = self.loss.d_loss(real_scores, fake_scores)
        inputs = PhaseInputs(critic, fake, fake_scores, real, real_scores, generator=generator)
        if "interpolates" in needs:
            inputs.interpolates = interpolates(real, fake, generator)
        logs: dict[str, torch.Tensor] = {}
        total = self._add(total, due, inputs, logs)
        if self.logits:
            real_scores, fake_scores = torch.sigmoid(real_scores.float()), torch.sigmoid(fake_scores.float())
        logs.update({"d/real": real_scores.detach().float().mean(), "d/fake": fake_scores.detach().float().mean()})
        return Terms(total, {"loss/d": total.detach(), **logs})

    def g_phase(self, critic: Critic, fake: torch.Tensor, step: int, generator: torch.Generator | None) -> Terms:
        """G's loss on a fake batch that carries G's graph, at G's ``step``-th step (from 0)."""
        fake = self.augment(fake, generator)
        fake_scores = critic(fake)
        logs: dict[str, torch.Tensor] = {}
        inputs = PhaseInputs(critic, fake, fake_scores, generator=generator)
        total = self._add(self.loss.g_loss(fake_scores), self._due("G", step), inputs, logs)
        return Terms(total, {"loss/g": total.detach(), **logs})
