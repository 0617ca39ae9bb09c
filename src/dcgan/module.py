"""The DCGAN LightningModule: manual optimization of G and D with one Adam each (Radford et al. 2015)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, ListConfig, OmegaConf

from dcgan.augment import DiffAugment
from dcgan.callbacks import DivergenceGuard
from dcgan.losses import LOSSES, gradient_penalty, r1_penalty

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


def _build(node: Mapping[str, Any]) -> Any:
    """instantiate(node), with a ValueError its class raised about a bad value passed on as that ValueError."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError):
            raise err.__cause__ from None
        raise


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class DCGAN(L.LightningModule):
    """Trains ``generator`` against ``discriminator``; both are given as ``_target_`` configs.

    Taking configs (not modules) keeps the checkpoint self-contained:
    ``DCGAN.load_from_checkpoint(path)`` rebuilds both networks without Hydra's run config.

    Each training batch: one D step on real + G(z).detach(); every ``n_critic``-th batch also a
    G step on the same G(z). ``loss`` is a ``_target_`` node of a :class:`dcgan.losses.GANLoss`
    (the paper's BCE with the non-saturating G loss by default). Lightning's ``global_step`` counts
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
        ema: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        loss: Mapping[str, Any] | str = "bce",
        gp_weight: float | None = None,
        r1_weight: float = 0.0,
        r1_interval: int = 16,
        augment: Mapping[str, Any] | str | list[str] | None = None,
        num_classes: int | None = None,
        ema_decay: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(n_critic, int) or n_critic < 1:
            raise ValueError(f"model.n_critic={n_critic}: expected an integer >= 1 (D steps per G step).")
        if ema_decay is not None and ema is None:  # checkpoints written before model.ema was a node
            ema = {"_target_": "dcgan.ema.EMA", "decay": ema_decay}
        if isinstance(loss, str):  # a shipped loss by name (checkpoints from before model/loss was a node)
            if loss not in LOSSES:
                raise ValueError(f"model.loss={loss}: expected one of {', '.join(LOSSES)} (model/loss=<name>).")
            loss = {"_target_": f"{LOSSES[loss].__module__}.{LOSSES[loss].__qualname__}"}
        if not isinstance(r1_interval, int) or r1_interval < 1:
            raise ValueError(f"model.r1_interval={r1_interval}: expected an integer >= 1 (D steps between R1 terms).")
        generator, discriminator, optim, loss = _plain(generator), _plain(discriminator), _plain(optim), _plain(loss)
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            if net.get("num_classes") != num_classes:
                raise ValueError(
                    f"model.{name}.num_classes={net.get('num_classes')} but model.num_classes={num_classes}: "
                    f"a conditional DCGAN needs both nets conditional on the same classes (leave them at "
                    "${model.num_classes})."
                )
        if isinstance(augment, (list, tuple, ListConfig)):  # the short form: model.augment.policy=[translation,cutout]
            augment = ",".join(augment)
        augment = _plain(augment) if isinstance(augment, Mapping) else augment
        ema = _plain(ema) if isinstance(ema, Mapping) else ema
        self.save_hyperparameters(ignore=["ema_decay"])
        self.automatic_optimization = False
        self.generator = instantiate(generator, _convert_="all")
        self.discriminator = instantiate(discriminator, _convert_="all")
        self.objective = _build(loss)
        missing = [m for m in ("d_loss", "g_loss") if not callable(getattr(self.objective, m, None))]
        if missing:
            raise ValueError(
                f"model.loss._target_={loss.get('_target_')}: it has no {' or '.join(missing)} method; expected "
                "the dcgan.losses.GANLoss interface: d_loss(real_scores, fake_scores) and g_loss(fake_scores)."
            )
        # the loss's own penalty weight (10 for Wasserstein, Gulrajani et al. 2017) unless model.gp_weight is set
        default_gp = float(getattr(self.objective, "gp_weight", 0.0))
        self.gp_weight = default_gp if gp_weight is None else float(gp_weight)
        if self.gp_weight and any(isinstance(m, torch.nn.BatchNorm2d) for m in self.discriminator.modules()):
            rank_zero_warn(
                "The gradient penalty is per image but D has BatchNorm, which mixes the images of a batch. "
                "Use model.discriminator.norm=none (experiment=wgan_gp sets it)."
            )
        # D's inputs pass through ``augment``: a node (model/augment=...) or a DiffAugment policy
        self.augment = _build(augment) if isinstance(augment, Mapping) else DiffAugment(augment)
        if not isinstance(self.augment, torch.nn.Module):
            raise ValueError(
                f"model.augment._target_={augment.get('_target_')}: expected a torch.nn.Module whose "
                "forward(images, generator) returns the augmented images (like dcgan.augment.DiffAugment)."
            )
        # Yazici et al. 2019: an exponential moving average of G's weights samples better than G itself.
        self.ema_rule = _build(ema) if ema else None
        if self.ema_rule is not None and not callable(getattr(self.ema_rule, "update", None)):
            raise ValueError(
                f"model.ema._target_={ema.get('_target_')}: it has no update method; expected "
                "update(average, generator, g_steps) like dcgan.ema.EMA."
            )
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if self.ema_rule else None
        seeded = torch.Generator().manual_seed(seed)
        if num_classes:  # one row per class, the same z down each column
            self.grid_nrow: int | None = max(1, num_fixed_samples // num_classes)
            fixed = torch.randn(self.grid_nrow, self.generator.nz, generator=seeded).repeat(num_classes, 1)
            fixed_labels = torch.arange(num_classes).repeat_interleave(self.grid_nrow)
        else:
            self.grid_nrow, fixed_labels = None, None
            fixed = torch.randn(num_fixed_samples, self.generator.nz, generator=seeded)
        self.register_buffer("fixed_noise", fixed)  # saved in checkpoints: grids stay comparable across resumes
        self.register_buffer("fixed_labels", fixed_labels)
        self._noise_gen: torch.Generator | None = None
        # loss name -> the first global step at which it was NaN or inf (-1: never), kept on the device so that
        # watching costs no host sync; callbacks.DivergenceGuard reads it
        self.nonfinite_steps: dict[str, torch.Tensor] = {}

    @property
    def conditional(self) -> bool:
        return bool(self.hparams.num_classes)

    def setup(self, stage: str) -> None:
        """A conditional model asks its DataModule for labelled batches, and checks the classes agree."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not self.conditional or datamodule is None:
            return
        classes = getattr(datamodule, "num_classes", None)
        if classes != self.hparams.num_classes:
            raise ValueError(
                f"model.num_classes={self.hparams.num_classes}, but data={getattr(datamodule, 'name', '?')} has "
                f"{classes or 'no'} classes. Use a labelled data set (digits, mnist, fashion_mnist, cifar10) "
                "with model.num_classes equal to its class count, or model.num_classes=null."
            )
        datamodule.with_labels = True

    def configure_model(self) -> None:
        """Speed switches, applied once the module sits on its device (before the optimizers are built)."""
        if self.hparams.channels_last:  # NHWC: faster convolutions with oneDNN (CPU) and tensor cores (GPU)
            self.to(memory_format=torch.channels_last)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.generator.compile()  # in place: parameter names, and so checkpoints, stay the same
            self.discriminator.compile()
            self._compiled = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Ask the divergence guard before every save: raising here aborts it and the previous file stays.

        This hook runs for weights-only saves too, where Lightning skips the callbacks' own hook.
        """
        for callback in self.trainer.callbacks if self._trainer is not None else []:
            if isinstance(callback, DivergenceGuard):
                callback.check(self.trainer, self)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        make = instantiate(self.hparams.optim, _convert_="all")  # a partial: Adam(params) with lr, betas
        return make(self.generator.parameters()), make(self.discriminator.parameters())

    def noise(self, n: int) -> torch.Tensor:
        """z for this step, a pure function of (seed, rank, global_step): a resumed run draws the same z."""
        if self._noise_gen is None or self._noise_gen.device != self.device:
            self._noise_gen = torch.Generator(self.device)
        self._noise_gen.manual_seed(_mix(self.hparams.seed, self.global_rank, self.global_step))
        return torch.randn(n, self.generator.nz, device=self.device, generator=self._noise_gen)

    def training_step(self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
        real = real.to(self.dtype)  # batches arrive as float32; "bf16-true"/"16-true" weights need their dtype
        if self.hparams.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        z = self.noise(real.size(0))
        # After this batch's D step, is it G's turn? Derived from global_step so it survives resume.
        g_turn = (self.global_step + 1) % (self.hparams.n_critic + 1) == self.hparams.n_critic
        with torch.set_grad_enabled(g_turn):
            fake = self.generator(z, labels)  # G runs once per batch, on the real batch's classes

        self.toggle_optimizer(opt_d)
        real_in, fake_in = self.augment(real, self._noise_gen), self.augment(fake.detach(), self._noise_gen)
        r1_turn = self.hparams.r1_weight > 0 and self._d_steps() % self.hparams.r1_interval == 0
        if r1_turn:
            real_in = real_in.detach().requires_grad_(True)
        real_scores = self.discriminator(real_in, labels)
        fake_scores = self.discriminator(fake_in, labels)
        loss_d = self.objective.d_loss(real_scores, fake_scores)
        logs = {}
        if self.gp_weight:
            critic = functools.partial(self.discriminator, labels=labels)
            logs["loss/gp"] = gradient_penalty(critic, real_in, fake_in, self._noise_gen)
            loss_d = loss_d + self.gp_weight * logs["loss/gp"]
        if r1_turn:  # lazy R1 (Karras et al. 2020): every r1_interval-th D step, scaled up to match
            logs["loss/r1"] = r1_penalty(real_scores, real_in)
            loss_d = loss_d + 0.5 * self.hparams.r1_weight * self.hparams.r1_interval * logs["loss/r1"]
        self._watch("loss/d", loss_d)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        logs.update({"loss/d": loss_d.detach(), **self._d_outputs(real_scores, fake_scores)})
        logs = {k: v.detach() for k, v in logs.items()}
        if g_turn:
            self.toggle_optimizer(opt_g)  # freezes D: G's loss puts no gradient into D
            loss_g = self.objective.g_loss(self.discriminator(self.augment(fake, self._noise_gen), labels))
            self._watch("loss/g", loss_g)
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
    def _watch(self, name: str, loss: torch.Tensor) -> None:
        first = self.nonfinite_steps.get(name)
        if first is None or first.device != loss.device:
            first = self.nonfinite_steps[name] = torch.full((), -1, dtype=torch.long, device=loss.device)
        first.masked_fill_(~torch.isfinite(loss).all() & (first < 0), self.global_step)

    def _d_steps(self) -> int:
        """D steps taken before this one: every batch makes one, G makes one every n_critic batches."""
        return self.global_step - self.global_step // (self.hparams.n_critic + 1)

    def _d_outputs(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """d/real, d/fake: mean D(x), D(G(z)) as probabilities where D outputs logits (bce), else raw scores."""
        if getattr(self.objective, "logits", False):
            real, fake = torch.sigmoid(real.float()), torch.sigmoid(fake.float())
        return {"d/real": real.detach().float().mean(), "d/fake": fake.detach().float().mean()}

    def _update_ema(self) -> None:
        updates = self.global_step // (self.hparams.n_critic + 1)  # G steps so far, this one included
        self.ema_rule.update(self.generator_ema, self.generator, updates)

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] from the EMA generator when on, else G; eval mode (BatchNorm running stats).

        ``z`` defaults to the fixed noise (and, for a conditional model, ``labels`` to its classes).
        """
        if z is None:
            z, labels = self.fixed_noise, self.fixed_labels
        if self.conditional and labels is None:
            raise ValueError(f"This DCGAN is conditional ({self.hparams.num_classes} classes): pass labels.")
        z = z.to(self.device)
        labels = labels.to(self.device) if labels is not None else None
        net = self.generator_ema if self.generator_ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            return net(z, labels).float()
        finally:
            net.train(was_training)
