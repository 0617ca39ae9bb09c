"""``hydra/launcher=gpus``: the jobs of a ``-m`` sweep side by side, each on its own GPU(s) or CPU cores.

Jobs run in joblib's loky worker processes (as hydra-joblib-launcher does); each job first takes a free
slot from ``dcgan.platform.slots`` and is then composed with that slot's device overrides, so its saved
``overrides.yaml`` and its log say where it ran.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from dcgan.platform.slots import SlotPlan, hold_slot, plan_slots

log = logging.getLogger(__name__)

SLOT_ENV = "DCGAN_LAUNCH_SLOT"  # read by dcgan.tasks.train.train to log the job's devices


def _run_in_slot(
    idx: int,
    overrides: Sequence[str],
    plan: SlotPlan,
    lock_dir: Path,
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn:
    setup_globals()
    Singleton.set_state(singleton_state)
    with hold_slot(lock_dir, plan.n_jobs) as slot:
        plan.pin(slot)
        os.environ[SLOT_ENV] = plan.describe(slot)
        sweep_config = hydra_context.config_loader.load_sweep_config(config, [*overrides, *plan.overrides(slot)])
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
        return run_job(
            hydra_context=hydra_context,
            config=sweep_config,
            task_function=task_function,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )


def _device_count(kind: str) -> int:
    if kind == "gpu":
        import torch

        return torch.cuda.device_count()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class GpuLauncher(Launcher):
    """Runs up to K jobs at once, K = devices // devices_per_job (GPUs), or one per job and core (CPU)."""

    def __init__(
        self,
        accelerator: str = "auto",
        devices_per_job: int | None = None,
        n_jobs: int | None = None,
        device_count: int | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.devices_per_job = devices_per_job
        self.n_jobs = n_jobs
        self.device_count = device_count
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def plan(self, num_jobs: int) -> SlotPlan:
        kind = self.accelerator
        if kind == "auto":
            import torch

            kind = "gpu" if torch.cuda.is_available() else "cpu"
        if kind not in ("gpu", "cpu"):
            raise ValueError(f"hydra.launcher.accelerator={kind}: expected auto, gpu or cpu.")
        count = self.device_count or _device_count(kind)
        if kind == "gpu" and self.devices_per_job is None and self.config is not None:
            devices = self.config.get("trainer", {}).get("devices")
            self.devices_per_job = devices if isinstance(devices, int) and devices > 0 else 1
        return plan_slots(kind, count, self.devices_per_job, self.n_jobs, num_jobs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib import Parallel, delayed

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        plan = self.plan(len(job_overrides))
        log.info("Launching %d jobs, %d at a time, in %s", len(job_overrides), plan.n_jobs, sweep_dir)
        for slot in range(plan.n_jobs):
            log.info("\t%s", plan.describe(slot))
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        runs = Parallel(n_jobs=plan.n_jobs, backend="loky")(
            delayed(_run_in_slot)(
                initial_job_idx + idx,
                overrides,
                plan,
                sweep_dir / ".slots",
                self.hydra_context,
                self.config,
                self.task_function,
                state,
            )
            for idx, overrides in enumerate(job_overrides)
        )
        return list(runs)
