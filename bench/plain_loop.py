"""The benches' one hand-written reference loop: pytorch/examples' ``dcgan/main.py`` with the project's nets and losses.

It is the baseline the project is measured against, so it stays plain on purpose: no Lightning, none of the
module's parts (objective, schedule, EMA), only ``Generator``, ``Discriminator``, ``d_loss_bce`` and
``g_loss_nonsaturating`` with Adam(2e-4, (0.5, 0.999)) each. It does what ``DCGAN.training_step`` does: z ~ N(0, 1),
fake = G(z) once, a D step on real and fake.detach(), a G step on D(fake) with D frozen (``requires_grad_(False)``,
as Lightning's ``toggle_optimizer``). Used by throughput.py, time_to_quality.py, end_to_end.py and profile_step.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

from bench.harness import NetConfig, WindowTimer
from dcgan.nets import Discriminator, Generator
from dcgan.objective.losses import d_loss_bce, g_loss_nonsaturating

LR, BETAS = 2e-4, (0.5, 0.999)  # Radford et al. 2015


class PlainGAN:
    """Fresh G and D with one Adam each (seed before building); ``step(real)`` trains both on one batch.

    Switches as the project's: ``channels_last`` (NHWC nets and batches), ``bf16`` (autocast around the whole
    step, backward and optimizer steps included, as Lightning's precision plugin wraps ``training_step``),
    ``compile`` (``nn.Module.compile()`` of G and D in place), ``fused`` (fused Adam).
    """

    def __init__(
        self,
        cfg: NetConfig,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        bf16: bool = False,
        compile: bool = False,
        fused: bool = False,
    ) -> None:
        self.cfg, self.device, self.channels_last, self.bf16 = cfg, torch.device(device), channels_last, bf16
        self.generator = Generator(nz=cfg.nz, ngf=cfg.ngf, image_size=cfg.image_size, channels=cfg.channels)
        self.discriminator = Discriminator(ndf=cfg.ndf, image_size=cfg.image_size, channels=cfg.channels)
        for net in (self.generator, self.discriminator):
            net.to(self.device).train()
            if channels_last:
                net.to(memory_format=torch.channels_last)
            if compile:
                net.compile()
        fused_arg = True if fused else None  # None: PyTorch's default (foreach)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=LR, betas=BETAS, fused=fused_arg)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=LR, betas=BETAS, fused=fused_arg)

    def step(self, real: torch.Tensor) -> None:
        """One D step and one G step on a float batch in [-1, 1], (B, C, S, S) on the device."""
        gen, disc = self.generator, self.discriminator
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            if self.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            z = torch.randn(real.size(0), self.cfg.nz, device=self.device)
            fake = gen(z)
            loss_d = d_loss_bce(disc(real), disc(fake.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()

            disc.requires_grad_(False)  # G's loss puts no gradient into D
            loss_g = g_loss_nonsaturating(disc(fake))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            disc.requires_grad_(True)


def batches(images: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless uint8 batches by indexing a seeded permutation per epoch (drop_last), like TensorBatchLoader."""
    gen = torch.Generator().manual_seed(seed)
    per_epoch = len(images) // batch_size
    while True:
        order = torch.randperm(len(images), generator=gen)
        for b in range(per_epoch):
            yield images[order[b * batch_size : (b + 1) * batch_size]]


def timed_steps(gan: PlainGAN, reals: Iterable[torch.Tensor], timer: WindowTimer) -> WindowTimer:
    """``gan.step`` on each batch until ``timer``'s window closes; the timer ticks after each fetch."""
    for real in reals:
        if timer.tick():
            return timer
        gan.step(real)
    raise RuntimeError(f"the batches ran out after {timer.batches}, before the timed window ended")
