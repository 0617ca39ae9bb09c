"""``hydra/launcher=slurm`` and ``slurm_local``: hydra-submitit-launcher whose jobs survive time limits and preemption.

Each job runs with ``ckpt_path=last`` unless the command line names a checkpoint: a fresh job finds none
and starts from scratch; a job that SLURM requeued (after a time-out or a preemption) or a sweep re-issued
with the same ``hydra.sweep.dir`` finds its own ``<job dir>/checkpoints/last.ckpt`` and continues. When
submitit's signal arrives, ``dcgan.lightning.requeue.RequeueOnSignal`` writes that checkpoint at a batch boundary and
then calls submitit's handler, which calls :meth:`checkpoint` here: the job is resubmitted with
``ckpt_path=last`` (replacing a checkpoint the first run started from) and requeued.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
except ImportError:  # no [slurm] extra: Hydra scans this module at every start, so it must import quietly
    LocalLauncher = SlurmLauncher = None  # hydra/launcher=slurm then stops in one line (dcgan.platform.extras)

REQUEUE_ENV = "DCGAN_REQUEUE"  # set in the job's process: callbacks.requeue (signal=auto) acts only in such jobs


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_from_last(overrides: Sequence[str], replace: bool = False) -> list[str]:
    """``overrides`` with ``ckpt_path=last`` added; an explicit ``ckpt_path`` is kept unless ``replace``."""
    if not replace and any(_key(o) == "ckpt_path" for o in overrides):
        return list(overrides)
    return [*(o for o in overrides if _key(o) != "ckpt_path"), "ckpt_path=last"]


class _Resumable:
    def __call__(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
        os.environ[REQUEUE_ENV] = "1"  # this runs in the job: its run resumes from last.ckpt when requeued
        return super().__call__(resume_from_last(sweep_overrides), *args, **kwargs)

    def checkpoint(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
        """Called by submitit in the job when it is about to be requeued: run it again from its last.ckpt."""
        return super().checkpoint(resume_from_last(sweep_overrides, replace=True), *args, **kwargs)


if SlurmLauncher is not None:

    class SlurmRequeueLauncher(_Resumable, SlurmLauncher):
        """SLURM jobs (one task per GPU) that resume from their own last.ckpt after a requeue."""

    class LocalRequeueLauncher(_Resumable, LocalLauncher):
        """The same on this machine (submitit's local executor): its timeout sends the same signal."""
