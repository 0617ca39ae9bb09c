"""What G and D minimise, in plain PyTorch: losses, penalties, augmentation, the EMA rule and the step schedule.

Nothing here imports Lightning or Hydra (tests/test_layout.py checks it): each part is a class a config node
names with ``_target_``, and :class:`Objective` puts the loss, the penalties and the augmentation together.
"""

from dcgan.objective.augment import DiffAugment
from dcgan.objective.ema import EMA
from dcgan.objective.losses import BCE, LSGAN, GANLoss, Hinge, Wasserstein
from dcgan.objective.objective import Objective, Terms
from dcgan.objective.penalties import R1, GradientPenalty, Penalty, PhaseInputs
from dcgan.objective.schedule import Alternating

__all__ = [
    "BCE", "EMA", "LSGAN", "R1", "Alternating", "DiffAugment", "GANLoss", "GradientPenalty", "Hinge", "Objective",
    "Penalty", "PhaseInputs", "Terms", "Wasserstein",
]  # fmt: skip
