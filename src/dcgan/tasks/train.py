"""The training task: ``train(cfg)`` builds data, model, callbacks, loggers and trainer from a composed config.

A plain function of the config: ``dcgan-train`` calls it through Hydra, and a notebook or another tool can call it
with a config from ``hydra.compose`` (docs/package.md). Where Hydra is running it also reads the job's overrides
(for the resume command it prints) and the chosen logger option.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, open_dict
from torch import nn

from dcgan.lightning.callbacks import CollapseAlarm
from dcgan.lightning.checkpoint_io import AtomicCheckpointIO, DiskFullError, remove_leftovers
from dcgan.lightning.requeue import lightning_cluster_plugins, requeueing_job
from dcgan.metrics.callback import QualityMetrics
from dcgan.platform.distributed import (
    RANK_CONFIG,
    describe_devices,
    find_unused_parameters,
    job_scope,
    use_job_rank_launcher,
)
from dcgan.platform.extras import NEEDS, installed, require
from dcgan.platform.rundir import run_dir_lock
from dcgan.platform.validation import check_train_config, user_errors

log = logging.getLogger("dcgan")


def _callbacks(group: DictConfig | None) -> list[Any]:
    """Every ``_target_`` node of the ``callbacks`` group, a bad argument named by its key (``callbacks.samples``)."""
    built = []
    for key, node in (group or {}).items():
        if node is not None and "_target_" in node:
            with user_errors(f"callbacks.{key}"):
                built.append(instantiate(node))
    return built


def _loggers(group: DictConfig | None) -> list[Any]:
    """The ``logger`` group's loggers. One whose extra is missing stops the run in one line, except under
    ``logger=many``, which takes the installed ones, says which it skipped and drops those from ``group`` (so the
    config the other DDP ranks start from has the same loggers)."""
    chosen = HydraConfig.get().runtime.choices.get("logger") if HydraConfig.initialized() else None
    loggers, skipped = [], []
    for key, node in (group or {}).items():
        if node is None or "_target_" not in node:
            continue
        need = NEEDS.get(f"logger={key}")
        if need is not None and not installed(need[0]):
            if chosen == "many":
                rank_zero_info(f'logger=many: {key} skipped (pip install "dcgan[{need[1]}]" to add it).')
                skipped.append(key)
                continue
            require(*need, what=f"logger.{key}")
        loggers.append(instantiate(node))
    if skipped:
        with open_dict(group):
            for key in skipped:
                del group[key]
    return loggers


def _finish_runs(trainer: L.Trainer) -> None:
    """End the W&B run this job opened: the next job of a sweep in this process would otherwise log into it."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and trainer.is_global_zero and logger._experiment is not None:
            logger.experiment.finish()


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def _quiet_advisories() -> None:
    """Silence advisories a user cannot act on: adverts for hosted services, a torch/Lightning deprecation."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    # Lightning 2.6's own pytree helper on torch >= 2.10; nothing in this project to change.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Lightning 2.6 asks manual-optimization modules to stash pre-step weights for periodic checkpoints;
    # ours are meant to hold the state after the batch's updates, which is what a resume continues from.
    warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization.*")
    # The quality monitor skips short epochs (callbacks.quality.min_batches); the best checkpoint then simply
    # waits for the next score. A monitor that can never be logged is dropped before training (_drop_unmonitorable).
    warnings.filterwarnings("ignore", message=r"`ModelCheckpoint\(monitor='val/.*could not find the monitored key")
    # A resumed run writes to its own new run dir by design; the old dir's top-k bookkeeping is moot.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded.*")


@rank_zero_only
def _announce_devices(trainer: L.Trainer) -> None:
    log.info("Devices: %s", describe_devices(trainer))
    if slot := os.environ.get("DCGAN_LAUNCH_SLOT"):  # set by hydra/launcher=gpus
        log.info("Launcher: %s", slot)


@rank_zero_only
def _announce(output_dir: Path, trainer: L.Trainer | None = None) -> None:
    for callback in trainer.checkpoint_callbacks if trainer else []:
        if getattr(callback, "last_model_path", "") and Path(callback.last_model_path).is_file():
            log.info("Last checkpoint: %s", callback.last_model_path)
        if getattr(callback, "monitor", None) and callback.best_model_path:
            score = float(callback.best_model_score)
            log.info("Best checkpoint (%s=%.4g): %s", callback.monitor, score, callback.best_model_path)
    log.info("Run dir: %s", output_dir)
    log.info("Watch it: tensorboard --logdir %s", output_dir)


def _drop_unmonitorable(callbacks: list[Any], datamodule: L.LightningDataModule, conditional: bool) -> list[Any]:
    """Remove the best checkpoint and the collapse alarm when this run cannot log their metric (no labels, ...)."""
    quality = next((c for c in callbacks if isinstance(c, QualityMetrics)), None)
    available = quality.names(datamodule, conditional) if quality else []
    kept = []
    for callback in callbacks:
        watches = isinstance(callback, (ModelCheckpoint, CollapseAlarm))
        monitor = getattr(callback, "monitor", None) if watches else None
        if monitor and monitor.startswith("val/") and monitor not in available:
            what = "collapse alarm" if isinstance(callback, CollapseAlarm) else "best checkpoint"
            rank_zero_info(f"No {monitor} in this run (it logs {available or 'no quality metric'}): {what} off.")
            continue
        kept.append(callback)
    return kept


def _check_sync_batchnorm(trainer: L.Trainer, sync_batchnorm: bool, model: L.LightningModule) -> None:
    if not sync_batchnorm:
        return
    twice = [name for name, p in model.objective.penalties.items() if getattr(p, "differentiates_twice", False)]
    if twice and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.discriminator.modules()):
        raise ValueError(
            f"trainer.sync_batchnorm=true with model.penalty {', '.join(twice)}: the penalty differentiates D twice "
            "(a gradient of a gradient), and SyncBatchNorm's backward cannot be (derivative for "
            "batch_norm_backward_elemt is not implemented). Fix: model.discriminator.norm=none (the R1 and WGAN-GP "
            "papers' D has no BatchNorm), or trainer.sync_batchnorm=false (each process normalises its own batch)."
        )
    if isinstance(trainer.accelerator, CPUAccelerator):
        raise ValueError(
            "trainer.sync_batchnorm=true needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only), but this "
            "run is on the CPU. Pass trainer.sync_batchnorm=false for CPU DDP (each process then normalises "
            "over its own batch)."
        )


def _time_budget(trainer_cfg: DictConfig) -> DictConfig:
    """With ``trainer.max_time`` given, the run lasts that long: a recipe's ``max_epochs`` does not end it first.

    Changes ``trainer_cfg`` in place. An explicit ``trainer.max_epochs=`` on the command line still counts
    (whichever comes first).
    """
    if trainer_cfg.get("max_time") is None or trainer_cfg.get("max_epochs") in (None, -1):
        return trainer_cfg
    if HydraConfig.initialized() and HydraConfig.get().job.config_name == Path(RANK_CONFIG).stem:
        return trainer_cfg  # another DDP rank: rank zero decided, and saved its decision in this config
    explicit = HydraConfig.initialized() and any(
        o.split("=")[0].lstrip("+~") == "trainer.max_epochs" for o in HydraConfig.get().overrides.task
    )
    if explicit:
        return trainer_cfg
    rank_zero_info(
        f"trainer.max_time={trainer_cfg.max_time}: training for that long (the config's max_epochs="
        f"{trainer_cfg.max_epochs} is lifted; pass trainer.max_epochs=N too to stop at whichever comes first)."
    )
    trainer_cfg.max_epochs = -1
    return trainer_cfg


def _plugins(trainer_cfg: DictConfig) -> list[Any]:
    """The trainer's plugins: the config's own, crash-safe checkpoint files, and under submitit on SLURM a
    cluster environment whose requeue is off (``dcgan.lightning.requeue`` requeues through submitit instead)."""
    plugins = [instantiate(p) for p in trainer_cfg.get("plugins") or []]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins + lightning_cluster_plugins()


def resume_command(output_dir: Path) -> str:
    """The command line that continues this run (or, in a ``-m`` sweep, every job of it) from its last.ckpt."""
    program = Path(sys.argv[0]).name
    program = f"python {program}" if program.endswith(".py") else program
    if not HydraConfig.initialized():
        return f"{program} ... hydra.run.dir={output_dir} ckpt_path=last"
    hydra_cfg = HydraConfig.get()
    pinned = ("ckpt_path", "hydra.run.dir", "hydra.sweep.dir")
    if hydra_cfg.mode == RunMode.MULTIRUN:
        given, pin = sys.argv[1:], f"hydra.sweep.dir={Path(hydra_cfg.sweep.dir).resolve()}"
    else:
        given, pin = list(hydra_cfg.overrides.task), f"hydra.run.dir={output_dir}"
    kept = [a for a in given if a.split("=", 1)[0].lstrip("+~") not in pinned]
    return " ".join(shlex.quote(a) for a in [*program.split(), *kept, pin, "ckpt_path=last"])


def _checkpoint_dirs(trainer: L.Trainer) -> list[Path]:
    return sorted({Path(c.dirpath) for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)})


def _last_good(trainer: L.Trainer) -> tuple[int, str] | None:
    """(global step, path) of the checkpoint on disk with the highest step, ``last.ckpt`` first among equals.

    Only the few newest files are opened (a run may keep hundreds); files written milliseconds apart can share
    an mtime, so the step decides, not the order of writing.
    """
    files = [p for folder in _checkpoint_dirs(trainer) if folder.is_dir() for p in folder.glob("*.ckpt")]
    found = []
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)[:4]:
        try:
            step = int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
        except Exception:  # not a whole checkpoint
            continue
        found.append((step, path.name == "last.ckpt", str(path)))
    if not found:
        return None
    step, _, path = max(found)
    return step, path


def _primary(trainer: L.Trainer) -> bool:
    """Rank zero of the job, before Lightning has set ranks up (its own rank numbers are only right inside fit)."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    return env is None or (env.local_rank() == 0 and env.node_rank() == 0)


@rank_zero_only
def _announce_resumable(output_dir: Path) -> None:
    if requeueing_job():
        return  # the launcher resumes requeued jobs by itself
    log.info("Fresh run. If it stops (time limit, kill, crash), continue it with: %s", resume_command(output_dir))


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the model ``cfg`` describes; returns the final logged metrics as floats."""
    _quiet_advisories()
    with job_scope():
        check_train_config(cfg)
        L.seed_everything(cfg.seed, workers=True)
        with user_errors("data"):
            datamodule = instantiate(cfg.data)
        with user_errors("model"):
            model = instantiate(cfg.model, _recursive_=False)
        callbacks = _callbacks(cfg.get("callbacks"))
        with user_errors("callbacks.quality"):
            callbacks = _drop_unmonitorable(callbacks, datamodule, model.conditional)
        with user_errors():
            if not cfg.trainer.get("enable_progress_bar", True):  # the bar is off: so is its callback
                callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
            trainer_cfg = _time_budget(cfg.trainer)
            loggers = _loggers(cfg.get("logger"))
            trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers, plugins=_plugins(trainer_cfg))
            _check_sync_batchnorm(trainer, cfg.trainer.get("sync_batchnorm", False), model)
        output_dir = Path(cfg.paths.output_dir).resolve()
        primary = _primary(trainer)
        # a requeued job may start while its predecessor is still exiting: it waits for the lock a while
        with run_dir_lock(output_dir, enabled=primary, wait_s=120 if requeueing_job() else 0) as lock:
            if primary:
                for folder in _checkpoint_dirs(trainer):
                    remove_leftovers(folder, before=lock.since)
            use_job_rank_launcher(trainer, cfg, output_dir)
            find_unused_parameters(trainer)
            _announce(output_dir)
            _announce_devices(trainer)
            if cfg.get("ckpt_path") is None:
                _announce_resumable(output_dir)
            try:
                trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            except DiskFullError as err:
                raise err.after(_last_good(trainer)) from None
            finally:
                _finish_runs(trainer)
        _announce(output_dir, trainer)
        return {k: float(v) for k, v in trainer.callback_metrics.items()}
