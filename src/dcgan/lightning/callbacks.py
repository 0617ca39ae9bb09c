"""Callbacks: fixed-noise sample grids (TensorBoard, other loggers, PNG files), GAN-aware checkpoints, a
divergence guard and a collapse alarm."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from PIL import Image
from torchvision.utils import make_grid, save_image

from dcgan.analysis.sampling import save_gif
from dcgan.errors import ArgumentError, DivergenceError, check_int
from dcgan.lightning import checkpoint_io
from dcgan.lightning.checkpoint_io import megabytes

log = logging.getLogger(__name__)


class CrossesSteps:
    """For callbacks that act every ``n`` global steps: a batch moves ``global_step`` by 1 or 2 (D and G steps), so
    it can step over a multiple of ``n``; this tells when a batch crossed one."""

    _step_at_batch_start = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._step_at_batch_start = trainer.global_step

    def crossed(self, trainer: L.Trainer, n: int) -> bool:
        return n > 0 and trainer.global_step // n > self._step_at_batch_start // n


class EveryNBatches(L.Callback):
    """Calls :meth:`poll` every ``every_n_batches`` training batches of the run (counted across epochs, so all DDP
    ranks poll at the same batches, where collective checks can agree)."""

    def __init__(self, every_n_batches: int = 10) -> None:
        check_int("every_n_batches", every_n_batches, 1, "training batches between two checks", 10)
        self.every_n_batches = every_n_batches
        self._batches = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._batches += 1
        if self._batches % self.every_n_batches == 0:
            self.poll(trainer, pl_module)

    def poll(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError


class SampleGrid(CrossesSteps, L.Callback):
    """Logs G(fixed noise) every ``every_n_steps`` global steps, at each epoch end and at the start.

    Also logs one grid of real training images. Runs on global rank zero only, with G in eval
    mode under no_grad. Loggers other than TensorBoard get the grid through their ``log_image``
    if they have one and are skipped otherwise; ``save_dir`` also writes each grid as a PNG, and
    ``gif`` makes all of the run's fixed-noise grids, in order, into one animation when training ends.
    """

    def __init__(
        self, every_n_steps: int = 500, nrow: int = 8, save_dir: str | None = None, gif: str | None = None
    ) -> None:
        check_int("every_n_steps", every_n_steps, 0, "global steps; 0: only at epoch ends", 200)
        self.every_n_steps, self.nrow = every_n_steps, nrow
        self.save_dir = Path(save_dir) if save_dir else None
        self.gif = Path(gif) if gif else None
        self.frames: list[Image.Image] = []
        self._last_step: int | None = None
        self._real_logged = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            self._log_samples(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._real_logged:
            self._real_logged = True
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            self._emit(trainer, "samples/real", images[: len(pl_module.fixed_noise)])
        if self.crossed(trainer, self.every_n_steps):
            self._log_samples(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_samples(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_samples(trainer, pl_module)
        if self.gif is not None and self.frames and trainer.is_global_zero:
            try:
                self.gif.parent.mkdir(parents=True, exist_ok=True)
                save_gif(self.frames, self.gif, bounce=False)
            except OSError as err:
                log.warning("%s not written (%s).", self.gif, err)

    def _log_samples(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_step == trainer.global_step or not trainer.is_global_zero:
            return
        self._last_step = trainer.global_step
        self._emit(trainer, "samples/fixed_noise", pl_module.sample(), getattr(pl_module, "grid_nrow", None))

    def _emit(self, trainer: L.Trainer, tag: str, images: torch.Tensor, nrow: int | None = None) -> None:
        """``nrow``: images per row; a conditional model asks for one row per class."""
        if not trainer.is_global_zero:
            return
        grid = make_grid(images.detach().float().cpu(), nrow=nrow or self.nrow, normalize=True, value_range=(-1, 1))
        step = trainer.global_step
        if self.gif is not None and tag == "samples/fixed_noise":
            self.frames.append(Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy()))
        for logger in trainer.loggers:
            if getattr(logger, "_write_failed", False):  # its files stopped on a failed write (dcgan.platform.loggers)
                continue
            try:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(tag, grid, global_step=step)
                elif callable(getattr(logger, "log_image", None)):  # WandbLogger, dcgan.platform.loggers.MLFlowLogger
                    logger.log_image(key=tag, images=[grid], step=step)
            except OSError as err:  # a full disk: the next checkpoint save stops the run in one line, not this
                logger._write_failed = True
                log.warning("%s: sample grids not written from here on (%s).", type(logger).__name__, err)
        if self.save_dir is not None:
            path = self.save_dir / f"{tag.split('/')[-1]}_step{step:07d}.png"
            try:
                self.save_dir.mkdir(parents=True, exist_ok=True)
                save_image(grid, path)
            except OSError as err:  # a full disk stops the run at its next checkpoint, in one line; not here
                log.warning("Sample PNGs off for the rest of the run: %s not written (%s).", path, err)
                self.save_dir = None


class GANCheckpoint(CrossesSteps, ModelCheckpoint):
    """``ModelCheckpoint`` whose step schedule survives two optimizers per batch.

    With manual optimization Lightning saves when ``global_step % every_n_train_steps == 0`` at a
    batch end, but ``global_step`` moves by 1 or 2 per batch here, so it can step over a multiple;
    this saves whenever a batch crosses one. It also writes ``last.ckpt`` when training ends,
    which Lightning skips once any periodic checkpoint exists, leaving a stale "last".

    Before training and after every save it projects the space the checkpoints still to come will keep by the
    end of the run, and warns once when the folder's free space will not hold them.
    """

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        if every_n_train_steps is not None:
            check_int("every_n_train_steps", every_n_train_steps, 0, "global steps; 0: only last.ckpt", 2000)
        super().__init__(*args, every_n_train_steps=every_n_train_steps, **kwargs)
        self._space_warned = False
        self._started: tuple[float, int] | None = None  # (time, global step) at the start of training

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._started = (time.monotonic(), trainer.global_step)
        self._check_space(trainer, pl_module)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and self._local():
            self._check_space(trainer, trainer.lightning_module, Path(filepath).stat().st_size)

    def _local(self) -> bool:
        return bool(self.dirpath) and isinstance(get_filesystem(self.dirpath), LocalFileSystem)

    def save_crossed(self, trainer: L.Trainer) -> None:
        """The periodic checkpoint of this batch, if it crossed a multiple of ``every_n_train_steps``: for a stop at
        a batch boundary that runs before this callback's own batch end (Lightning calls checkpoint callbacks last)."""
        if self.crossed(trainer, self._every_n_train_steps) and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def _check_space(self, trainer: L.Trainer, pl_module: L.LightningModule, size: int | None = None) -> None:
        """Warn once when the checkpoints kept from now to the end of the run will not fit in the free space."""
        if self._space_warned or not self._local() or not trainer.is_global_zero:
            return
        folder = Path(self.dirpath)
        while not folder.is_dir() and folder != folder.parent:  # created by the first save; measure where it will be
            folder = folder.parent
        size = size or _checkpoint_bytes(pl_module)
        steps_left = self._steps_left(trainer, pl_module)
        every = self._every_n_train_steps
        if steps_left is None:  # no end in sight (max_time alone, before a save has measured the pace)
            files = 1
        elif every > 0 and self.save_top_k == -1:  # every periodic one is kept
            end = trainer.global_step + steps_left
            files = end // every - trainer.global_step // every
        else:
            files = 0
        needed = (files + 1) * size  # + 1: a save writes its new file before it replaces the old last.ckpt
        try:
            free = checkpoint_io.free_bytes(folder)
        except OSError:
            return
        if needed <= free:
            return
        self._space_warned = True
        fits = max(free // size - 1, 0)
        keep_fewer = (
            f"keep fewer (callbacks.checkpoint.every_n_train_steps={every * math.ceil(files / max(fits, 1))} or "
            "callbacks.checkpoint.save_top_k=1), "
            if files
            else ""
        )
        end = f" by the end of the run (about global step {trainer.global_step + steps_left})" if steps_left else ""
        log.warning(
            f"Checkpoint space: {files} more checkpoint(s) of about {megabytes(size)} will be kept in {self.dirpath}"
            f"{end}, {megabytes(needed)} with a save's temporary copy, but {megabytes(free)} is free there (room for "
            f"{fits}). Fix: {keep_fewer}free space there, or run on a larger disk (hydra.run.dir=...)."
        )

    def _steps_left(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int | None:
        """Global steps to the end of the run: the nearest of max_steps, max_epochs, max_time (at the pace so far)."""
        bounds = []
        if trainer.max_steps is not None and trainer.max_steps > 0:
            bounds.append(trainer.max_steps - trainer.global_step)
        per_batch = 1 + 1 / getattr(getattr(pl_module, "schedule", None), "n_critic", 1)  # D steps and G steps
        batches = trainer.num_training_batches
        if trainer.max_epochs not in (None, -1) and math.isfinite(batches):
            bounds.append(int((trainer.max_epochs - trainer.current_epoch) * batches * per_batch))
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer.time_remaining("train") is not None and self._started is not None:
            elapsed, done = time.monotonic() - self._started[0], trainer.global_step - self._started[1]
            if done > 0 and elapsed > 0:
                bounds.append(int(timer.time_remaining("train") * done / elapsed))
        return max(min(bounds), 0) if bounds else None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.crossed(trainer, self._every_n_train_steps) and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """On SIGTERM (``kill``, a scheduler's stop) write ``last.ckpt`` at the current step.

        Lightning raises ``SIGTERMException`` between batches, after the batch's updates, so the state saved is
        the one a resume continues from. Other exceptions write nothing: a crash or a divergence keeps the last
        good checkpoint.
        """
        super().on_exception(trainer, pl_module, exception)  # Lightning's save_on_exception, when set
        if self.save_on_exception or not isinstance(exception, SIGTERMException):
            return
        if self.save_last and not trainer.sanity_checking and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            rank_zero_info(f"SIGTERM: wrote {self.last_model_path} at global step {trainer.global_step}.")


class GANProgressBar(TQDMProgressBar):
    """TQDM bar that also shows ``keys`` (the losses), read off the device only when the bar refreshes.

    Logging them with ``prog_bar=True`` would make Lightning convert them to Python floats after
    every batch: a host sync per step on a GPU.
    """

    def __init__(self, refresh_rate: int = 1, keys: Sequence[str] = ("loss/d", "loss/g")) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.keys = tuple(keys)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float]:
        items = super().get_metrics(trainer, pl_module)
        for key in self.keys:
            if (value := trainer.callback_metrics.get(key)) is not None:
                items[key] = f"{float(value):.3f}"
        return items


class DivergenceGuard(EveryNBatches):
    """Stops the run when a loss becomes NaN or inf, names the loss and the step, and writes no checkpoint after it.

    The module notes on the device the first step at which each loss was not finite (no host sync per batch);
    this reads those notes every ``every_n_batches`` batches, at each epoch end and before every checkpoint is
    written (the module's ``on_save_checkpoint`` calls :meth:`before_save`), so the last checkpoint on disk always
    predates the divergence. Under DDP the ranks agree first.
    Raises ``DivergenceError``: ``train.py`` exits with status 2; in a sweep the job fails (an Optuna trial is
    recorded as failed) and the sweep goes on.
    """

    def poll(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def before_save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        noted = getattr(pl_module, "nonfinite_steps", {})
        bad = {name: int(step) for name, step in noted.items() if int(step) >= 0}
        if not trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            return
        last = next((c.last_model_path for c in trainer.checkpoint_callbacks if getattr(c, "last_model_path", "")), "")
        if bad:
            name, step = min(bad.items(), key=lambda item: item[1])
            what = f"{name} became NaN or inf at global step {step}"
        else:
            what = "a loss on another rank became NaN or inf"
        resume = (
            f"The last checkpoint, written before it, is kept: {last}. Resume from it with a smaller learning "
            f"rate, e.g. ckpt_path={last} model.optim.lr=1e-4"
            if last and Path(last).is_file()
            else "No checkpoint was written before it. Start again with a smaller learning rate (model.optim.lr=1e-4)"
        )
        raise DivergenceError(
            f"Training diverged: {what}. {resume}, or a more stable objective (model/loss=hinge, model/penalty=[r1])."
        )


class CollapseAlarm(L.Callback):
    """Says when a diversity score falls: ``monitor`` (``val/cmodes1k``, a recall) below ``fraction`` of the best
    value the run has logged so far (mode collapse, or G dropping classes). ``mode="min"`` watches a score where
    lower is better (``val/ckl1k``): the alarm fires when it rises above the best divided by ``fraction``.

    Read after each quality score (place it after ``callbacks.quality``). The log line names the step, the value,
    the best one and its step, and the newest checkpoint on disk at or before that best step; the event is logged
    as ``alarm/collapse`` = 1 at that step (a spike in TensorBoard's scalars). It fires once per fall and re-arms
    when the score climbs back. Its state is saved with the run; resumed with another ``monitor`` it starts afresh.
    """

    def __init__(self, monitor: str, fraction: float = 0.8, mode: str = "max") -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ArgumentError("monitor", monitor, "a logged key such as val/cmodes1k or val/crecall1k_test")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ArgumentError("fraction", fraction, "a share of the best value in (0, 1)", 0.8)
        if mode not in ("max", "min"):
            raise ArgumentError("mode", mode, "max (higher is better: modes, recall) or min (kl)", "max")
        self.monitor, self.fraction, self.mode = monitor, float(fraction), mode
        self.best: float | None = None
        self.best_step = -1
        self.falls: list[int] = []  # global steps at which the alarm fired
        self._armed = True

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value, step = float(value), trainer.global_step
        if self.best is None or self._better(value, self.best):
            self.best, self.best_step = value, step
        threshold = self.fraction * self.best if self.mode == "max" else self.best / self.fraction
        if not self._better(threshold, value):  # at or past the threshold on the good side
            self._armed = True
            return
        if not self._armed:
            return
        self._armed = False
        self.falls.append(step)
        where = _newest_checkpoint(trainer, self.best_step) or "none on disk"
        if trainer.is_global_zero:  # a log line (console and train.log), which no warnings filter hides
            past = f"fell below {self.fraction:g} x" if self.mode == "max" else f"rose above 1/{self.fraction:g} x"
            log.warning(
                f"Collapse alarm at global step {step}: {self.monitor}={value:.4g} {past} the run's best "
                f"{self.best:.4g} (step {self.best_step}). The newest checkpoint at or before that best: {where}."
            )
        for logger in trainer.loggers:
            logger.log_metrics({"alarm/collapse": 1.0}, step=step)

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("monitor", "best", "best_step", "falls", "_armed")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("monitor") != self.monitor:  # another score: its best says nothing about this one
            return
        for key in ("best", "best_step", "falls", "_armed"):
            setattr(self, key, state_dict[key])


def _checkpoint_bytes(pl_module: L.LightningModule) -> int:
    """About the size of a checkpoint before the first is written: the state dict plus Adam's two moments."""
    state = sum(t.numel() * t.element_size() for t in pl_module.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in pl_module.parameters() if p.requires_grad)
    return state + 2 * trainable


def _newest_checkpoint(trainer: L.Trainer, step: int) -> str | None:
    """The checkpoint file on disk with the highest step at or below ``step`` in the run's checkpoint folders."""
    found: list[tuple[int, str]] = []
    for callback in trainer.checkpoint_callbacks:
        folder = Path(getattr(callback, "dirpath", None) or "")
        if not callback.dirpath or not folder.is_dir():
            continue
        for path in folder.glob("*.ckpt"):
            digits = re.search(r"step(\d+)", path.name)
            if digits and int(digits.group(1)) <= step:
                found.append((int(digits.group(1)), str(path)))
    return max(found)[1] if found else None
