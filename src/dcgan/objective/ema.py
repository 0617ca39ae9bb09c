"""The exponential moving average of G's weights (Yazici et al. 2019): ``model/ema=average``.

A rule object, not the averaged network: the module keeps the average as ``generator_ema`` (saved in the
checkpoint) and calls ``update`` after every G step. A user's own rule is any class with the same
``update(average, generator, g_steps)`` method, selected with ``model.ema._target_=my_lab.MyAverage``.
"""

from __future__ import annotations

import torch
from torch import nn

from dcgan.errors import ArgumentError


class EMA:
    """average = d * average + (1 - d) * G for weights; buffers (BatchNorm running statistics) are copied.

    With ``warmup``, d = min(decay, (1 + n) / (10 + n)) after n G steps, so the average forgets the random
    initial weights within a few hundred steps instead of ~1/(1 - decay) (1,000 at 0.999), which is most of a
    short CPU run. Measured on the default digits run: docs/variants.md.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        if not (isinstance(decay, (int, float)) and 0.0 < decay < 1.0):
            raise ArgumentError("decay", decay, "a decay in (0, 1), e.g. 0.999 (or no model/ema)", 0.999)
        self.decay, self.warmup = float(decay), warmup

    def decay_at(self, g_steps: int) -> float:
        return min(self.decay, (1 + g_steps) / (10 + g_steps)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, average: nn.Module, generator: nn.Module, g_steps: int) -> None:
        """Move ``average`` towards ``generator`` after its ``g_steps``-th step."""
        weight = 1.0 - self.decay_at(g_steps)
        torch._foreach_lerp_(list(average.parameters()), [p.detach() for p in generator.parameters()], weight)
        for avg_buf, buf in zip(average.buffers(), generator.buffers(), strict=True):
            avg_buf.copy_(buf)
