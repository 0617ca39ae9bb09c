"""Entry points: ``train()`` builds everything from a composed Hydra config; ``main`` is ``dcgan-train``."""

from __future__ import annotations

import functools
import logging
import math
import os
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from dcgan import sampling
from dcgan.checkpoint_io import AtomicCheckpointIO
from dcgan.distributed import RANK_CONFIG, describe_devices, find_unused_parameters, job_scope, use_job_rank_launcher
from dcgan.errors import UserError
from dcgan.evaluation import evaluate
from dcgan.extras import NEEDS, MissingExtra, check_command_line, installed, require
from dcgan.hardware import register_resolvers
from dcgan.metrics.callback import QualityMetrics
from dcgan.module import DCGAN
from dcgan.requeue import lightning_cluster_plugins, submitit_executor
from dcgan.validation import check_train_config, user_errors

log = logging.getLogger("dcgan")


def _conf_dir() -> Path:
    """The configs: ``dcgan/conf/`` inside an installed wheel, else the checkout's top-level ``conf/``."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


CONF_DIR = _conf_dir()
CONFIG_DIR_ENV = "DCGAN_CONFIG_DIR"  # a folder of the user's own config options, searched before the shipped ones
register_resolvers()  # before Hydra composes conf/: trainer/default.yaml picks its precision through one


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def _loggers(group: DictConfig | None) -> list[Any]:
    """The ``logger`` group's loggers. One whose extra is missing stops the run in one line, except under
    ``logger=many``, which takes the installed ones and says which it skipped."""
    chosen = HydraConfig.get().runtime.choices.get("logger") if HydraConfig.initialized() else None
    loggers = []
    for key, node in (group or {}).items():
        if node is None or "_target_" not in node:
            continue
        need = NEEDS.get(f"logger={key}")
        if need is not None and not installed(need[0]):
            if chosen == "many":
                rank_zero_info(f'logger=many: {key} skipped (pip install "dcgan[{need[1]}]" to add it).')
                continue
            require(*need, what=f"logger.{key}")
        loggers.append(instantiate(node))
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
    """Remove quality-monitoring checkpoints whose metric this run cannot log (e.g. no labels, no Inception)."""
    quality = next((c for c in callbacks if isinstance(c, QualityMetrics)), None)
    available = quality.names(datamodule, conditional) if quality else []
    kept = []
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None) if isinstance(callback, ModelCheckpoint) else None
        if monitor and monitor.startswith("val/") and monitor not in available:
            rank_zero_info(
                f"No {monitor} in this run (it logs {available or 'no quality metric'}): best checkpoint off."
            )
            continue
        kept.append(callback)
    return kept


def _check_sync_batchnorm(trainer: L.Trainer, sync_batchnorm: bool) -> None:
    if sync_batchnorm and isinstance(trainer.accelerator, CPUAccelerator):
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
    cluster environment whose requeue is off (``dcgan.requeue`` requeues through submitit instead)."""
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


@rank_zero_only
def _announce_resumable(output_dir: Path) -> None:
    if submitit_executor():
        return  # the launcher resumes requeued jobs by itself
    log.info("Fresh run. If it stops (time limit, kill, crash), continue it with: %s", resume_command(output_dir))


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the model ``cfg`` describes; returns the final logged metrics as floats."""
    _quiet_advisories()
    with job_scope():
        check_train_config(cfg)
        L.seed_everything(cfg.seed, workers=True)
        with user_errors():
            datamodule = instantiate(cfg.data)
            model = instantiate(cfg.model, _recursive_=False)
            callbacks = _drop_unmonitorable(_instantiate_all(cfg.get("callbacks")), datamodule, model.conditional)
            if not cfg.trainer.get("enable_progress_bar", True):  # the bar is off: so is its callback
                callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
            trainer_cfg = _time_budget(cfg.trainer)
            loggers = _loggers(cfg.get("logger"))
            trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers, plugins=_plugins(trainer_cfg))
            _check_sync_batchnorm(trainer, cfg.trainer.get("sync_batchnorm", False))
        output_dir = Path(cfg.paths.output_dir).resolve()
        use_job_rank_launcher(trainer, cfg, output_dir)
        find_unused_parameters(trainer)
        _announce(output_dir)
        _announce_devices(trainer)
        if cfg.get("ckpt_path") is None:
            _announce_resumable(output_dir)
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        finally:
            _finish_runs(trainer)
        _announce(output_dir, trainer)
        return {k: float(v) for k, v in trainer.callback_metrics.items()}


def objective(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a sweeper optimises: ``metrics[cfg.optimized_metric]``, or None when no metric is named."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(
            f"optimized_metric={name}: this run logged no such metric (it logged {sorted(metrics) or 'none'}). "
            "Name one of those, or make the run log it (val/cfid<N>_<split> needs labelled data and callbacks.quality)."
        )
    return metrics[name]


def _exit_with(err: BaseException) -> None:
    """Print a user's mistake as the error lines it is and exit with status 2, without a traceback.

    In a sweep (``-m``) the error is raised instead: the launcher records the job as failed and runs the others
    (an exit would end the whole sweep), and an Optuna study records the trial as failed and goes on.
    """
    for line in str(err).splitlines():
        log.error("%s", line)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise err
    sys.exit(2)


def _before_hydra(entry: Any) -> Any:
    """Wrap a Hydra entry point: name a missing optional extra in one line, and add ``$DCGAN_CONFIG_DIR``.

    Both act on the command line, because Hydra resolves config groups (and fails on a missing plugin) before
    any of this project's code runs.
    """

    @functools.wraps(entry)
    def run() -> Any:
        try:
            check_command_line(sys.argv[1:])
        except MissingExtra as err:
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(2)
        user_dir = os.environ.get(CONFIG_DIR_ENV)
        if user_dir and not any(a.startswith(("--config-dir", "-cd")) for a in sys.argv[1:]):
            if not Path(user_dir).expanduser().is_dir():
                print(f"Error: {CONFIG_DIR_ENV}={user_dir}: not a folder. Fix: point it at yours.", file=sys.stderr)
                sys.exit(2)
            sys.argv.insert(1, f"--config-dir={Path(user_dir).expanduser().resolve()}")
        return entry()

    return run


@_before_hydra
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """``python train.py`` / ``dcgan-train``: Hydra composes ``conf/train.yaml`` with the overrides.

    Returns ``optimized_metric``'s final value, which Hydra hands to sweepers (Optuna minimises it).
    """
    try:
        return objective(cfg, train(cfg))
    except UserError as err:  # the message already says what is wrong and how to fix it
        _exit_with(err)
    except SIGTERMException:  # last.ckpt was written at the step it stopped (GANCheckpoint.on_exception)
        log.warning("Stopped by SIGTERM. Continue with: %s", resume_command(Path(cfg.paths.output_dir).resolve()))
        sys.exit(128 + signal.SIGTERM)  # in a sweep too: the sweep stops; re-issued, each job resumes its own


def _device(name: str) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)


def load_model(ckpt_path: str, device: str = "auto", ema: bool = True) -> DCGAN:
    """A trained DCGAN from its checkpoint alone, in eval mode; ``ema=False`` samples G instead of its EMA."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no such checkpoint. Runs keep theirs in <run dir>/checkpoints/."
        )
    model = DCGAN.load_from_checkpoint(path, map_location=_device(device), weights_only=False).eval()
    if not ema:
        model.generator_ema = None
    return model


def _classes(model: DCGAN, labels: Any) -> torch.Tensor | None:
    """The classes a conditional model draws (``labels``, or all of them); None for an unconditional one."""
    num_classes = model.hparams.get("num_classes")
    if not num_classes:
        if labels:
            raise ValueError(f"labels={list(labels)}: this checkpoint's DCGAN is not conditional; drop labels=.")
        return None
    chosen = list(range(num_classes)) if labels is None else [int(c) for c in labels]
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad or not chosen:
        raise ValueError(f"labels={chosen}: expected class indices in [0, {num_classes - 1}], e.g. [3, 7].")
    return torch.tensor(chosen, device=model.device)


def _sample_classes(model: DCGAN, classes: torch.Tensor, z: torch.Tensor, group: int = 1) -> torch.Tensor:
    """G(z) with the classes taken in turn, each for ``group`` consecutive z (an interpolation path)."""
    turn = torch.arange(len(z), device=classes.device) // group
    return model.sample(z, classes[turn % len(classes)])


def generate(cfg: DictConfig) -> dict[str, Path]:
    """Write what ``conf/generate.yaml`` asks for; returns the paths written."""
    model = load_model(cfg.ckpt_path, cfg.device, cfg.ema)
    out, nz, seed = Path(cfg.out), model.generator.nz, cfg.seed
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    sample = model.sample
    classes = _classes(model, cfg.get("labels"))
    if classes is not None:  # conditional: every batch cycles through the chosen classes
        sample = functools.partial(_sample_classes, model, classes)
        columns = cfg.class_grid_columns
        z = sampling.noise(columns, nz, seed + 6).repeat(len(classes), 1)
        grid = model.sample(z, classes.repeat_interleave(columns))
        sampling.grid_image(grid, nrow=columns).save(written.setdefault("class_grid", out / "class_grid.png"))
    if cfg.grid:
        images = sample(sampling.noise(cfg.grid, nz, seed))
        sampling.grid_image(images, nrow=math.ceil(math.sqrt(cfg.grid))).save(
            written.setdefault("grid", out / "grid.png")
        )
    if cfg.n:
        z = sampling.noise(cfg.n, nz, seed + 1)
        sampling.save_pngs(sampling.in_batches(sample, z, cfg.batch_size), out / "samples")
        written["samples"] = out / "samples"
        if cfg.npz:
            sampling.save_npz(sampling.in_batches(sample, z, cfg.batch_size), out / "images.npz")
            written["npz"] = out / "images.npz"
    pairs, steps = cfg.interpolation.pairs, cfg.interpolation.steps
    if pairs:
        along = sample if classes is None else functools.partial(_sample_classes, model, classes, group=steps)
        path = sampling.interpolation(
            along, sampling.noise(pairs, nz, seed + 2), sampling.noise(pairs, nz, seed + 3), steps
        )
        sampling.grid_image(path.flatten(0, 1), nrow=steps).save(
            written.setdefault("interpolation", out / "interpolation.png")
        )
        if cfg.interpolation.gif:
            frames = [sampling.grid_image(path[:, t], nrow=math.ceil(math.sqrt(pairs))) for t in range(steps)]
            sampling.save_gif(frames, written.setdefault("gif", out / "interpolation.gif"))
    arith = cfg.arithmetic
    if arith.pool:
        pool = sampling.noise(arith.pool, nz, seed + 4)
        nrow = math.ceil(math.sqrt(arith.pool))
        sampling.grid_image(sample(pool), nrow).save(written.setdefault("pool", out / "arithmetic_pool.png"))
        if arith.a or arith.b or arith.c:
            row = sample(sampling.arithmetic_row(pool, arith.a, arith.b, arith.c, arith.variants, seed + 5))
            sampling.grid_image(row, nrow=len(row)).save(written.setdefault("arithmetic", out / "arithmetic.png"))
    for name, path in written.items():
        log.info("%s: %s", name, path)
    return written


@_before_hydra
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="generate")
def generate_main(cfg: DictConfig) -> None:
    """``python generate.py`` / ``dcgan-generate``."""
    try:
        generate(cfg)
    except (UserError, FileNotFoundError) as err:
        _exit_with(err)


@_before_hydra
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def evaluate_main(cfg: DictConfig) -> None:
    """``python evaluate.py`` / ``dcgan-evaluate``."""
    try:
        evaluate(cfg)
    except (UserError, FileNotFoundError) as err:  # the message says what is wrong and how to fix it
        _exit_with(err)


if __name__ == "__main__":  # python -m dcgan.cli: how dcgan.distributed starts the other DDP ranks of a job
    main()
