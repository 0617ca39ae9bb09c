"""A scheduler's stop signal: finish the batch, write ``last.ckpt`` on every rank together, then let submitit requeue.

Under ``hydra/launcher=slurm`` (submitit) SLURM sends submitit's signal (USR2 unless
``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) ``signal_delay_s`` before a job's time limit, and on
preemption where the cluster sets ``PreemptParameters=send_user_signal``. Submitit's own handler
requeues and exits at once, on whatever line training was on. :class:`RequeueOnSignal` takes the
signal first: the handler only notes it, training goes on to the next check (every
``every_n_batches`` batches, where the ranks agree), ``last.ckpt`` is written at that batch
boundary, and then submitit's handler runs: it requeues the job (a time-out counts against
``max_num_timeout``, a preemption does not) and exits. The requeued job runs with ``ckpt_path=last``,
which the launcher adds, and continues from that checkpoint.

Lightning's own SLURM auto-requeue is switched off for these jobs (:func:`lightning_cluster_plugins`),
so exactly one requeue happens.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from dcgan.errors import ArgumentError
from dcgan.lightning.callbacks import EveryNBatches

log = logging.getLogger(__name__)


def submitit_executor() -> str | None:
    """``slurm`` or ``local`` inside a job that submitit started, else None."""
    return os.environ.get("SUBMITIT_EXECUTOR") or None


def submitit_signal() -> signal.Signals:
    """The signal submitit's job environment listens to for time-outs and preemption."""
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()


def requeueing_job() -> bool:
    """Inside a job of hydra/launcher=slurm or slurm_local, whose launcher resumes requeued jobs from last.ckpt."""
    return bool(submitit_executor()) and os.environ.get("DCGAN_REQUEUE") == "1"


def lightning_cluster_plugins() -> list[Any]:
    """Trainer plugins for a SLURM job (batch, not interactive): Lightning's ranks from SLURM, its requeue off.

    Lightning's SLURM auto-requeue would otherwise save ``hpc_ckpt_*.ckpt`` inside its USR1 handler (in the
    middle of a step) and requeue on its own; requeueing is submitit's (or your script's) job here.
    """
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


class SignalWatcher(EveryNBatches):
    """A callback that installs a signal handler while training: ``_restore`` puts the previous one back, whether
    training ends, fails or stops."""

    def _restore(self) -> None:
        raise NotImplementedError

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()


class RequeueOnSignal(SignalWatcher):
    """On ``signal`` (``auto``: submitit's, inside submitit jobs only), checkpoint at a batch boundary and requeue.

    ``signal`` may also name one (``SIGUSR1``, ``SIGUSR2``) for a plain ``sbatch --signal=...`` script: then the
    run writes ``last.ckpt``, hands the signal to whatever handler was there before (if any), and stops with
    exit status 128 + the signal's number; a script that re-runs ``python train.py ... ckpt_path=last``
    continues it. ``off`` leaves signals alone.
    """

    def __init__(self, signal: str = "auto", every_n_batches: int = 10) -> None:
        super().__init__(every_n_batches)
        if signal not in ("auto", "off") and not _is_signal_name(signal):
            raise ArgumentError("signal", repr(signal), "auto, off or a signal name like SIGUSR1", "SIGUSR1")
        self.signal_name = signal
        self._signum: signal.Signals | None = None
        self._previous: Any = None
        self._received: int | None = None

    def _watched(self) -> signal.Signals | None:
        if self.signal_name == "off":
            return None
        if self.signal_name == "auto":  # only where a requeued job continues (plain submitit would restart it)
            return submitit_signal() if requeueing_job() else None
        return signal.Signals[self.signal_name]

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._received = signum  # nothing else here: a handler must not log or save in the middle of a step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning saved the handlers it restores at teardown, so that it restores submitit's, not this one
        super().on_train_start(trainer, pl_module)
        self._signum = self._watched()
        if self._signum is not None and threading.current_thread() is not threading.main_thread():
            log.warning("callbacks.requeue: not in the main thread, where signals are handled: %s not watched.",
                        self._signum.name)  # fmt: skip
            self._signum = None
        if self._signum is not None:
            self._previous = signal.signal(self._signum, self._note)

    def poll(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._signum is None:
            return
        if not trainer.strategy.reduce_boolean_decision(self._received is not None, all=False):
            return
        name = signal.Signals(self._received or self._signum).name
        path = save_last(trainer)
        if trainer.is_global_zero:
            log.warning("%s received: stopped at global step %d: wrote %s.", name, trainer.global_step, path)
        self._hand_over()

    def _hand_over(self) -> None:
        signum, previous = self._signum, self._previous
        self._restore()
        if callable(previous):
            previous(signum, None)  # submitit: requeue (rank zero) and exit
        raise SystemExit(128 + int(signum))  # no handler, or one that returned (submitit's on ranks > 0)

    def _restore(self) -> None:
        if self._signum is not None:
            signal.signal(self._signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._signum = None


def _is_signal_name(name: str) -> bool:
    return name in signal.Signals.__members__


def save_last(trainer: L.Trainer) -> str:
    """Write every ``save_last`` checkpoint callback's ``last.ckpt`` now (collective under DDP); returns its path.

    A periodic checkpoint this batch was due is written first: the stop comes before the checkpoint callbacks'
    own batch end, and the resumed run never crosses that step again.
    """
    for callback in trainer.checkpoint_callbacks:
        if callable(getattr(callback, "save_crossed", None)):
            callback.save_crossed(trainer)
    written = ""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last:
            callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
            written = written or callback.last_model_path
    if not written and trainer.is_global_zero:
        log.warning("No checkpoint callback has save_last=true: nothing written that ckpt_path=last could resume.")
    return written or "nothing (callbacks.checkpoint.save_last is off)"
