"""``hydra/launcher=gpus``: the jobs of a ``-m`` sweep side by side, each on its own GPU(s) or CPU cores.

Up to K jobs run at once, K slots of devices (``dcgan.platform.slots``; K = GPUs // devices_per_job x
jobs_per_device). A thread per running job takes a free
slot and starts the job in a fresh process (``spawn``) whose environment names only the slot's devices
(``CUDA_VISIBLE_DEVICES``; on CPU slots the cores and the thread count): a job never inherits a CUDA context
or a cache from a job before it, and sees its GPUs as 0..d-1 (``trainer.devices=[0, ...]``). The job is
composed with the slot's overrides, so its saved ``overrides.yaml`` and its log say where it ran; its
``JobReturn`` comes back through a pipe. Each job pays a fresh interpreter's start-up (a few seconds).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from dcgan.errors import UserError
from dcgan.platform.slots import SlotPlan, hold_slot, plan_slots

log = logging.getLogger(__name__)

SLOT_ENV = "DCGAN_LAUNCH_SLOT"  # read by dcgan.tasks.train.train to log the job's devices


def _job_process(plan: SlotPlan, slot: int, payload: bytes, conn: Any) -> None:
    """The job's own process: enter the slot (before unpickling the job imports torch and the task's modules, so
    that nothing has read CUDA_VISIBLE_DEVICES or the thread count yet), compose the job's config, run it, send its
    JobReturn back."""
    os.environ[SLOT_ENV] = plan.describe(slot)
    plan.enter(slot)
    idx, overrides, hydra_context, config, task_function, singleton_state = cloudpickle.loads(payload)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, [*overrides, *plan.overrides(slot)])
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    result = run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    if result.status == JobStatus.FAILED:
        error = result._return_value
        if not isinstance(error, UserError):  # a fault, not a mistake its message explains: where it happened
            traceback.print_exception(error, file=sys.stderr)  # (the launcher receives it without its traceback)
        if not _round_trips(error):  # its constructor takes more than the message: it would not unpickle
            result.return_value = RuntimeError(f"{type(error).__name__}: {error}")
    conn.send_bytes(cloudpickle.dumps(result))
    conn.close()


def _round_trips(value: Any) -> bool:
    try:
        cloudpickle.loads(cloudpickle.dumps(value))
    except Exception:
        return False
    return True


def _run_in_slot(idx: int, overrides: Sequence[str], plan: SlotPlan, lock_dir: Path, *job: Any) -> JobReturn:
    """In a launcher thread: hold a free slot while the job runs in a fresh process of its own."""
    context = multiprocessing.get_context("spawn")
    with hold_slot(lock_dir, plan.n_jobs) as slot:
        receive, send = context.Pipe(duplex=False)
        payload = cloudpickle.dumps((idx, list(overrides), *job))
        process = context.Process(target=_job_process, args=(plan, slot, payload, send), name=f"dcgan-job-{idx}")
        process.start()
        send.close()
        try:
            result = cloudpickle.loads(receive.recv_bytes())
        except EOFError:  # the process ended without a result: killed, out of memory, a crash in C
            result = None
        process.join()
    if result is None:
        failed = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
        code = process.exitcode
        how = f"exit status {code}"
        if code is not None and code < 0:  # killed by a signal: SIGKILL is most often the kernel's out-of-memory killer
            how = f"signal {signal.Signals(-code).name}"
            if code == -signal.SIGKILL:
                how += " (often out of memory: lower hydra.launcher.n_jobs or the batch size)"
        failed.return_value = RuntimeError(
            f"job #{idx} ({' '.join(overrides)}) ended with {how} before it returned; its train.log says how far "
            "it got."
        )
        return failed
    return result


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
        jobs_per_device: int = 1,
    ) -> None:
        self.accelerator = accelerator
        self.devices_per_job = devices_per_job
        self.n_jobs = n_jobs
        self.device_count = device_count
        self.jobs_per_device = jobs_per_device
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
        return plan_slots(kind, count, self.devices_per_job, self.n_jobs, num_jobs, self.jobs_per_device)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
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
        job = (self.hydra_context, self.config, self.task_function, state)
        pool = ThreadPoolExecutor(max_workers=plan.n_jobs, thread_name_prefix="dcgan-slot")
        try:
            runs = [
                pool.submit(_run_in_slot, initial_job_idx + idx, overrides, plan, sweep_dir / ".slots", *job)
                for idx, overrides in enumerate(job_overrides)
            ]
            return [run.result() for run in runs]
        except BaseException:  # Ctrl-C: the jobs not started yet never start; the running ones get it too
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
