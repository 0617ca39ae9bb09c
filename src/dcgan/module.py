"""The DCGAN LightningModule: manual optimization of G and D with one Adam each (Radford et al. 2015)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dcgan.losses import d_loss_bce, g_loss_nonsaturating

_MASK64 = 2**64 - 1


def _mix(*values: int) -> int:
    """One 63-bit seed from several integers (splitmix64, Steele et al. 2014).

    Every input bit reaches the low 32 bits, which are all a CPU ``torch.Generator`` uses: packing
    (seed, rank, step) into separate bit fields would give every rank and seed the same CPU noise.
    """
    x = 0
    for value in values:
        x = (x + value + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x >> 1


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class DCGAN(L.LightningModule):
    """Trains ``generator`` against ``discriminator``; both are given as ``_target_`` configs.

    Taking configs (not modules) keeps the checkpoint self-contained:
    ``DCGAN.load_from_checkpoint(path)`` rebuilds both networks without Hydra's run config.

    Each training batch: one D step on real + G(z).detach(); every ``n_critic``-th batch also a
    G step with the non-saturating loss on the same G(z). Lightning's ``global_step`` counts
    optimizer steps, so one batch advances it by 2 when ``n_critic=1``.
    """

    def __init__(
        self,
        generator: Mapping[str, Any],
        discriminator: Mapping[str, Any],
        optim: Mapping[str, Any],
        n_critic: int = 1,
        num_fixed_samples: int = 64,
        seed: int = 0,
        ema_decay: float | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(n_critic, int) or n_critic < 1:
            raise ValueError(f"model.n_critic={n_critic}: expected an integer >= 1 (D steps per G step).")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"model.ema_decay={ema_decay}: expected a value in (0, 1), e.g. 0.999, or null for off.")
        generator, discriminator, optim = _plain(generator), _plain(discriminator), _plain(optim)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = instantiate(generator, _convert_="all")
        self.discriminator = instantiate(discriminator, _convert_="all")
        # Yazici et al. 2019: an exponential moving average of G's weights samples better than G itself.
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if ema_decay else None
        fixed = torch.randn(num_fixed_samples, self.generator.nz, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("fixed_noise", fixed)  # saved in checkpoints: grids stay comparable across resumes
        self._noise_gen: torch.Generator | None = None

    def configure_model(self) -> None:
        """Speed switches, applied once the module sits on its device (before the optimizers are built)."""
        if self.hparams.channels_last:  # NHWC: faster convolutions with oneDNN (CPU) and tensor cores (GPU)
            self.to(memory_format=torch.channels_last)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.generator.compile()  # in place: parameter names, and so checkpoints, stay the same
            self.discriminator.compile()
            self._compiled = True

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        make = instantiate(self.hparams.optim, _convert_="all")  # a partial: Adam(params) with lr, betas
        return make(self.generator.parameters()), make(self.discriminator.parameters())

    def noise(self, n: int) -> torch.Tensor:
        """z for this step, a pure function of (seed, rank, global_step): a resumed run draws the same z."""
        if self._noise_gen is None or self._noise_gen.device != self.device:
            self._noise_gen = torch.Generator(self.device)
        self._noise_gen.manual_seed(_mix(self.hparams.seed, self.global_rank, self.global_step))
        return torch.randn(n, self.generator.nz, device=self.device, generator=self._noise_gen)

    def training_step(self, real: torch.Tensor, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = real.to(self.dtype)  # batches arrive as float32; "bf16-true"/"16-true" weights need their dtype
        if self.hparams.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        z = self.noise(real.size(0))
        # After this batch's D step, is it G's turn? Derived from global_step so it survives resume.
        g_turn = (self.global_step + 1) % (self.hparams.n_critic + 1) == self.hparams.n_critic
        with torch.set_grad_enabled(g_turn):
            fake = self.generator(z)  # G runs once per batch; D sees it detached

        self.toggle_optimizer(opt_d)
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake.detach())
        loss_d = d_loss_bce(real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        logs = {
            "loss/d": loss_d.detach(),
            "d/real": torch.sigmoid(real_logits.detach().float()).mean(),
            "d/fake": torch.sigmoid(fake_logits.detach().float()).mean(),
        }
        if g_turn:
            self.toggle_optimizer(opt_g)  # freezes D: G's loss puts no gradient into D
            loss_g = g_loss_nonsaturating(self.discriminator(fake))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()
            self.untoggle_optimizer(opt_g)
            logs["loss/g"] = loss_g.detach()
            if self.generator_ema is not None:
                self._update_ema()
        # "step" sets the logger's x-axis to global_step, the unit of max_steps and every interval;
        # torch.full, not a Python float, so logging it is a device fill rather than a blocking copy.
        logs["step"] = torch.full((), float(self.global_step), device=self.device)
        # No prog_bar=True: Lightning would read those values off the device every batch.
        # GANProgressBar shows the losses when it refreshes.
        # sync_dist: under DDP each value is the mean over ranks (an all-reduce, no host sync); alone a no-op.
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=len(z), sync_dist=True)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """ema = decay * ema + (1 - decay) * G for weights; BatchNorm running statistics are copied."""
        ema_params = list(self.generator_ema.parameters())
        torch._foreach_lerp_(
            ema_params, [p.detach() for p in self.generator.parameters()], 1.0 - self.hparams.ema_decay
        )
        for ema_buf, buf in zip(self.generator_ema.buffers(), self.generator.buffers(), strict=True):
            ema_buf.copy_(buf)

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] from the EMA generator when on, else G; eval mode (BatchNorm running stats).

        ``z`` defaults to the fixed noise.
        """
        z = self.fixed_noise if z is None else z.to(self.device)
        net = self.generator_ema if self.generator_ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            return net(z).float()
        finally:
            net.train(was_training)
