"""Which devices each job of a parallel sweep gets: slots of GPUs (or CPU cores), held by a file lock.

A sweep of J jobs on G GPUs with d GPUs per job runs K = G // d jobs at once (x ``jobs_per_device`` where jobs
share a GPU). Jobs do not finish in
order, so a job takes whichever slot is free when it starts (``fcntl`` locks in the sweep dir, released
when the job ends or its process dies) rather than a slot fixed by its number.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SlotPlan:
    """``groups[k]``: the device indices of slot k; ``kind``: "gpu" (CUDA indices) or "cpu" (core ids).

    ``visible``: the launcher's own ``CUDA_VISIBLE_DEVICES`` entries, which its CUDA indices number (empty: all).
    """

    kind: str
    groups: tuple[tuple[int, ...], ...]
    visible: tuple[str, ...] = ()

    @property
    def n_jobs(self) -> int:
        return len(self.groups)

    def overrides(self, slot: int) -> list[str]:
        """Config overrides that put a job on slot ``slot``: all the GPUs its process sees (CPU jobs keep theirs)."""
        if self.kind != "gpu":
            return []
        return ["trainer.accelerator=gpu", f"trainer.devices=[{','.join(map(str, range(len(self.groups[slot]))))}]"]

    def environment(self, slot: int) -> dict[str, str]:
        """What the job's own process is started with: on GPUs ``CUDA_VISIBLE_DEVICES`` naming only the slot's
        (through the launcher's own ``CUDA_VISIBLE_DEVICES``, where it has one); on CPU cores the thread count."""
        group = self.groups[slot]
        if self.kind != "gpu":
            return {"OMP_NUM_THREADS": str(len(group))}
        names = self.visible or tuple(str(i) for i in range(max(group) + 1))
        return {"CUDA_VISIBLE_DEVICES": ",".join(names[i] for i in group)}

    def describe(self, slot: int) -> str:
        if self.kind != "gpu":
            return f"slot {slot + 1} of {self.n_jobs}: CPU cores {list(self.groups[slot])}"
        env = self.environment(slot)["CUDA_VISIBLE_DEVICES"]
        return f"slot {slot + 1} of {self.n_jobs}: GPUs {list(self.groups[slot])} (CUDA_VISIBLE_DEVICES={env})"

    def enter(self, slot: int) -> None:
        """In the job's own process, before torch touches a device: the slot's environment, and on CPU slots the
        slot's cores for this process and the DDP ranks it starts, one thread each."""
        os.environ.update(self.environment(slot))  # Lightning's DDP and child processes follow it
        if self.kind != "cpu":
            return
        cores = self.groups[slot]
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
        import torch

        torch.set_num_threads(len(cores))


def plan_slots(
    kind: str,
    device_count: int,
    devices_per_job: int | None,
    n_jobs: int | None,
    num_jobs: int,
    jobs_per_device: int = 1,
) -> SlotPlan:
    """Split ``device_count`` devices into slots.

    GPUs: ``devices_per_job`` each (default 1), as many slots as fit (or ``n_jobs``); ``jobs_per_device`` > 1
    puts that many jobs on each GPU (small models leave a GPU mostly idle), spread over the GPUs first.
    CPU: ``n_jobs`` slots (default: one per job, at most one per core), the cores split evenly.
    """
    if device_count < 1:
        raise ValueError(f"device_count={device_count}: expected >= 1 (GPUs, or CPU cores on a CPU-only machine).")
    if not isinstance(jobs_per_device, int) or jobs_per_device < 1:
        raise ValueError(f"hydra.launcher.jobs_per_device={jobs_per_device}: expected an integer >= 1 (1: a GPU each).")
    if kind == "gpu":
        per_job = devices_per_job or 1
        if per_job > device_count:
            raise ValueError(
                f"hydra.launcher.devices_per_job={per_job}, but this machine has {device_count} GPU(s). "
                f"Use devices_per_job <= {device_count} (and trainer.devices to match)."
            )
        base = [tuple(range(k * per_job, (k + 1) * per_job)) for k in range(device_count // per_job)]
        shared = [group for _ in range(jobs_per_device) for group in base]  # GPU 0, 1, ..., then 0, 1, ... again
        groups = tuple(shared[: min(n_jobs or len(shared), len(shared))])
    else:
        slots = min(n_jobs or max(num_jobs, 1), device_count)
        per_job = devices_per_job or device_count // slots
        slots = min(slots, device_count // per_job)
        groups = tuple(tuple(range(k * per_job, (k + 1) * per_job)) for k in range(slots))
    visible = tuple(n.strip() for n in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if n.strip())
    if kind == "gpu" and visible and device_count > len(visible):
        raise ValueError(
            f"hydra.launcher.device_count={device_count}, but CUDA_VISIBLE_DEVICES names {len(visible)} GPU(s) "
            f"({','.join(visible)}). Use device_count <= {len(visible)}, or null for all of them."
        )
    return SlotPlan(kind, groups, visible if kind == "gpu" else ())


@contextmanager
def hold_slot(lock_dir: Path, n_slots: int, poll_s: float = 0.2) -> Iterator[int]:
    """Waits for a free slot in ``lock_dir`` and holds it for the ``with`` block; yields its index."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(n_slots):
            handle = open(lock_dir / f"slot{slot}.lock", "w")  # noqa: SIM115 - held open while the job runs
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield slot
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(poll_s)
