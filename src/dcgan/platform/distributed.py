"""DDP under Hydra: how the other ranks of a job are started, and what a finished job leaves behind.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by running the command line again. Under Hydra that
command is the whole ``-m`` sweep (each rank would start every job of it), or a run whose timestamped
output dir differs from rank zero's. Here every other rank instead runs ``python -m dcgan.platform.cli`` on this
job's config, saved fully resolved next to the job's own ``.hydra/config.yaml``: the same values, the
same output dir, in any launcher (basic, the gpus launcher's job processes, submitit) and without Hydra (a notebook).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

RANK_CONFIG = "ddp_rank_config.yaml"
_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "PL_GLOBAL_SEED")


def rank_command(config_file: Path, local_rank: int) -> list[str]:
    """The command that runs one more rank of the job whose resolved config is ``config_file``."""
    run_dir = config_file.parent.parent
    return [
        sys.executable,
        "-m",
        "dcgan.platform.cli",
        f"--config-path={config_file.parent}",
        f"--config-name={config_file.stem}",
        f'hydra.run.dir="{run_dir}"',  # the rank's log file (train_rank<N>.log) sits in the job's dir
        "hydra.output_subdir=null",  # rank zero's .hydra/ stays the job's record
        f"hydra.job.name=train_rank{local_rank}",
    ]


class JobRankLauncher(_SubprocessScriptLauncher):
    """Lightning's process launcher for ``ddp``, with ``rank_command`` as the command of the other ranks."""

    def __init__(self, base: _SubprocessScriptLauncher, config_file: Path) -> None:
        super().__init__(base.cluster_environment, base.num_processes, base.num_nodes)
        self.config_file = config_file

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ.update(
            MASTER_ADDR=env.main_address,
            MASTER_PORT=str(env.main_port),
            NODE_RANK=str(env.node_rank()),
            LOCAL_RANK=str(env.local_rank()),
            WORLD_SIZE=str(self.num_processes * self.num_nodes),
        )
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            self.procs.append(subprocess.Popen(rank_command(self.config_file, local_rank), env=child_env))


def use_job_rank_launcher(trainer: L.Trainer, cfg: DictConfig, output_dir: Path) -> None:
    """Make ``trainer`` start its other DDP ranks on ``cfg`` (written resolved under ``output_dir``)."""
    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher) or launcher.cluster_environment.creates_processes_externally:
        return  # one process, spawn/fork launchers, or ranks started by SLURM / torchrun: nothing to re-run
    config_file = output_dir / ".hydra" / RANK_CONFIG
    config_file.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, config_file, resolve=True)
    trainer.strategy._launcher = JobRankLauncher(launcher, config_file)


def find_unused_parameters(trainer: L.Trainer) -> None:
    """DDP must look for unused parameters: D's step leaves G's weights without gradients, and G's step D's.

    Without it (``strategy=ddp``, or ``auto`` with several devices) DDP stops at the second batch.
    """
    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
        strategy._ddp_kwargs["find_unused_parameters"] = True
        rank_zero_info("DDP: find_unused_parameters=True (each of the GAN's two steps trains one of its two nets).")


@contextmanager
def job_scope() -> Iterator[None]:
    """Leaves the process as the job found it: DDP environment variables and no process group.

    Lightning's launcher exports MASTER_PORT, LOCAL_RANK, ... into this process; the next job of a
    sequential sweep would take them for ranks started from outside and wait for ranks that never come.
    """
    saved = {key: os.environ.get(key) for key in _DIST_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def describe_devices(trainer: L.Trainer) -> str:
    """E.g. ``cuda:[2, 3], ddp: 2 process(es) per node x 1 node(s)``, or ``cpu (2 thread(s) per process)``."""
    devices: Sequence[torch.device] = getattr(trainer.strategy, "parallel_devices", None) or [
        trainer.strategy.root_device
    ]
    kind = devices[0].type
    ids = sorted({d.index for d in devices if d.index is not None})
    where = f"{kind}:{ids}" if ids else kind
    if kind == "cpu":
        where += f" ({torch.get_num_threads()} thread(s) per process)"
    if trainer.world_size == 1:
        return where
    strategy = type(trainer.strategy).__name__.removesuffix("Strategy").lower()
    return f"{where}, {strategy}: {trainer.num_devices} process(es) per node x {trainer.num_nodes} node(s)"
