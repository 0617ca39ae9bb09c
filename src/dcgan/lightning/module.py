"""The DCGAN LightningModule: manual optimization of G and D, one optimizer each, by the objective's phases."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, ListConfig, OmegaConf

from dcgan.errors import ArgumentError, check_int
from dcgan.objective import BCE, Alternating, Objective, Terms

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


def _mean_over_ranks(logs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Each value's mean over the DDP ranks, in one all-reduce of the values stacked (float32, on their device).

    Not ``trainer.strategy.reduce(..., "mean")``: Lightning's runs a barrier before its all-reduce, a second
    blocking collective on every logging batch."""
    device = next((v.device for v in logs.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    stacked = torch.stack([torch.as_tensor(v, device=device).detach().float().reshape(()) for v in logs.values()])
    torch.distributed.all_reduce(stacked)
    stacked /= torch.distributed.get_world_size()
    return dict(zip(logs, stacked.unbind(), strict=True))


def _build(node: Mapping[str, Any], where: str) -> Any:
    """instantiate(node); a bad argument its class rejects is named under ``where`` (``schedule.n_critic=0: ...``)."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise ArgumentError(where, node, "a node with _target_ (the class to build and its arguments)")
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, ArgumentError):
            raise err.__cause__.at(where) from None
        if isinstance(err.__cause__, ValueError):
            raise err.__cause__ from None
        raise


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg


def _check_optim(optim: Mapping[str, Any]) -> None:
    lr, betas = optim.get("lr", 1.0), optim.get("betas", (0.0, 0.0))
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ArgumentError("optim.lr", lr, "a learning rate > 0 (the paper: 2e-4)", "2e-4")
    if (
        not isinstance(betas, (list, tuple))
        or len(betas) != 2
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    ):
        raise ArgumentError("optim.betas", betas, "two values in [0, 1) (the paper: [0.5, 0.999])", "[0.5,0.999]")


class DCGAN(L.LightningModule):
    """Trains ``generator`` against ``discriminator`` by the objective's phases; every part is a ``_target_`` node.

    Parts: the two networks; the objective's ``loss`` (a :class:`dcgan.objective.losses.GANLoss`; None: the
    paper's BCE with the non-saturating G loss), ``penalty`` (named penalty nodes, e.g. ``{"gp": ...}``) and
    ``augment``; the ``optim`` partial (one optimizer each for G and D); the ``ema`` rule of G's average; the
    ``schedule`` of D and G steps (``n_critic`` D steps per G step by default). Taking nodes (not objects) keeps
    the checkpoint self-contained: ``DCGAN.load_from_checkpoint(path)`` rebuilds every part from its
    hyper-parameters, which are the arguments as given (plain containers), nothing rewritten.

    Each training batch: a D step on real + G(z).detach(); on G's turn also a G step on the same G(z).
    Lightning's ``global_step`` counts optimizer steps, so one batch advances it by 2 when ``n_critic=1``.
    """

    def __init__(
        self,
        generator: Mapping[str, Any],
        discriminator: Mapping[str, Any],
        optim: Mapping[str, Any],
        loss: Mapping[str, Any] | None = None,
        penalty: Mapping[str, Mapping[str, Any]] | None = None,
        augment: Mapping[str, Any] | None = None,
        ema: Mapping[str, Any] | None = None,
        schedule: Mapping[str, Any] | None = None,
        num_classes: int | None = None,
        num_fixed_samples: int = 64,
        seed: int = 0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        given = dict(locals())
        self.save_hyperparameters({k: _plain(v) for k, v in given.items() if k not in ("self", "__class__")})
        hp = self.hparams
        self.automatic_optimization = False
        if hp.num_classes is not None and (not isinstance(hp.num_classes, int) or hp.num_classes < 2):
            raise ArgumentError("num_classes", hp.num_classes, "null (unconditional) or the number of classes >= 2", 10)
        check_int("num_fixed_samples", hp.num_fixed_samples, 1, "images in the grid", 64)
        self.generator = _build(hp.generator, "generator")
        self.discriminator = _build(hp.discriminator, "discriminator")
        for name, net in (("generator", self.generator), ("discriminator", self.discriminator)):
            if getattr(net, "num_classes", None) != hp.num_classes:
                raise ArgumentError(
                    f"{name}.num_classes", getattr(net, "num_classes", None), f"the model's num_classes="
                    f"{hp.num_classes}: a conditional DCGAN needs both nets conditional on the same classes (leave "
                    "them at ${model.num_classes})"
                )  # fmt: skip
        if hp.penalty and "_target_" in hp.penalty:
            raise ArgumentError(
                "penalty", hp.penalty["_target_"], "a dict of penalty nodes by name, e.g. {r1: {_target_: ...}}: each "
                "model/penalty option file holds its node under its name"
            )  # fmt: skip
        penalties = {name: _build(node, f"penalty.{name}") for name, node in (hp.penalty or {}).items()}
        loss = _build(hp.loss, "loss") if hp.loss else BCE()  # the paper's
        self.objective = Objective(loss, penalties, _build(hp.augment, "augment") if hp.augment else None)
        mixed = self.objective.per_image_penalties()
        if mixed and getattr(self.discriminator, "mixes_batch", False):
            rank_zero_warn(
                f"Penalty {', '.join(mixed)} is per image, but D ({type(self.discriminator).__name__}) mixes the "
                "images of a batch (BatchNorm, packing or batch statistics). Use a D that scores each image alone: "
                "for DCGAN's, model.discriminator.norm=none (experiment=wgan_gp sets it) with no packing (pacgan) and "
                "no minibatch_std (mbstd)."
            )
        self.schedule = _build(hp.schedule, "schedule") if hp.schedule else Alternating()
        _check_optim(hp.optim)
        self._optimizer = _build(hp.optim, "optim")  # a partial: Adam(params) with lr, betas
        # Yazici et al. 2019: an exponential moving average of G's weights samples better than G itself.
        self.ema = _build(hp.ema, "ema") if hp.ema else None
        if self.ema is not None and not callable(getattr(self.ema, "update", None)):
            raise ArgumentError("ema", type(self.ema).__name__, "a rule with update(average, generator, g_steps), "
                                "like dcgan.objective.ema.EMA")  # fmt: skip
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if self.ema else None
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
        """Ask every callback with a ``before_save(trainer, module)`` (the divergence guard) before each save:
        raising there aborts it and the previous file stays. This hook runs for weights-only saves too, where
        Lightning skips the callbacks' own."""
        for callback in self.trainer.callbacks if self._trainer is not None else []:
            if callable(before_save := getattr(callback, "before_save", None)):
                before_save(self.trainer, self)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return self._optimizer(self.generator.parameters()), self._optimizer(self.discriminator.parameters())

    def noise(self, n: int) -> torch.Tensor:
        """z for this step, a pure function of (seed, rank, global_step): a resumed run draws the same z."""
        if self._noise_gen is None or self._noise_gen.device != self.device:
            self._noise_gen = torch.Generator(self.device)
        self._noise_gen.manual_seed(_mix(self.hparams.seed, self.global_rank, self.global_step))
        return torch.randn(n, self.generator.nz, device=self.device, generator=self._noise_gen)

    def training_step(self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real, labels = self._inputs(batch)
        steps = self.global_step  # optimizer steps so far: the schedule and the noise derive from it (resumable)
        z = self.noise(real.size(0))
        g_turn = self.schedule.g_turn(steps)
        with torch.set_grad_enabled(g_turn):
            fake = self.generator(z, labels)  # G runs once per batch, on the real batch's classes
        critic = functools.partial(self.discriminator, labels=labels)

        d_step, g_step = self.schedule.d_steps(steps), self.schedule.g_steps(steps)
        d_phase = functools.partial(self.objective.d_phase, critic, real, fake.detach(), d_step, self._noise_gen)
        logs = self._optimize(opt_d, "loss/d", d_phase).logs
        if g_turn:
            g_phase = functools.partial(self.objective.g_phase, critic, fake, g_step, self._noise_gen)
            logs.update(self._optimize(opt_g, "loss/g", g_phase).logs)
            if self.ema is not None:
                self.ema.update(self.generator_ema, self.generator, g_step + 1)
        # "step" sets the logger's x-axis to global_step, the unit of max_steps and every interval;
        # torch.full, not a Python float, so logging it is a device fill rather than a blocking copy.
        logs["step"] = torch.full((), float(self.global_step), device=self.device)
        # No prog_bar=True: Lightning would read those values off the device every batch (GANProgressBar shows
        # the losses when it refreshes). No sync_dist: it costs a barrier and a blocking all-reduce per key on
        # every batch; under DDP the values are averaged over ranks here, in one all-reduce, only on the batches
        # whose values reach the loggers. Between those, the progress bar shows rank zero's own.
        if self.trainer.world_size > 1 and self.trainer._logger_connector.should_update_logs:
            logs = _mean_over_ranks(logs)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=len(z))

    def _inputs(self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        real, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
        real = real.to(self.dtype)  # batches arrive as float32; "bf16-true"/"16-true" weights need their dtype
        if self.hparams.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        return real, labels

    def _optimize(self, optimizer: Any, name: str, phase: Callable[[], Terms]) -> Terms:
        """One step of ``optimizer`` on the loss ``phase`` computes (watched as ``name``), the other net frozen."""
        self.toggle_optimizer(optimizer)  # G's loss puts no gradient into D, and D's none into G
        terms = phase()
        self._watch(name, terms.total)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(terms.total)
        optimizer.step()
        self.untoggle_optimizer(optimizer)
        return terms

    @torch.no_grad()
    def _watch(self, name: str, loss: torch.Tensor) -> None:
        first = self.nonfinite_steps.get(name)
        if first is None or first.device != loss.device:
            first = self.nonfinite_steps[name] = torch.full((), -1, dtype=torch.long, device=loss.device)
        first.masked_fill_(~torch.isfinite(loss).all() & (first < 0), self.global_step)

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
