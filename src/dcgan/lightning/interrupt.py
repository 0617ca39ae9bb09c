"""Ctrl-C: the first stops the run at the next batch boundary with ``last.ckpt`` written; a second aborts at once.

Without this, Python turns Ctrl-C into a ``KeyboardInterrupt`` wherever training happens to be (inside an
optimizer step as likely as not), Lightning shuts down without a checkpoint and up to
``callbacks.checkpoint.every_n_train_steps`` of work is lost.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import lightning as L

from dcgan.lightning.requeue import SignalWatcher, save_last

EXIT_STATUS = 128 + signal.SIGINT  # 130, what a shell reports for a program ended by Ctrl-C


class Interrupted(Exception):  # not an error: the run stopped where the user asked
    """Raised at the batch boundary after the first Ctrl-C, once ``last.ckpt`` is written."""

    def __init__(self, global_step: int, checkpoint: str) -> None:
        self.global_step, self.checkpoint = global_step, checkpoint
        super().__init__(f"Ctrl-C: stopped at global step {global_step}: wrote {checkpoint}.")


class StopOnCtrlC(SignalWatcher):
    """The first SIGINT is noted; at the next batch end (under DDP: the next check every ``every_n_batches``
    batches, where the ranks agree) ``last.ckpt`` is written and :class:`Interrupted` ends the run: ``train.py``
    prints the command that continues it and exits with status 130. A second SIGINT exits at once (status 130,
    nothing written). DataLoader workers ignore SIGINT (``dcgan.data.loader``), so the batch in flight finishes.
    """

    def __init__(self, every_n_batches: int = 10) -> None:
        super().__init__(every_n_batches)
        self._received = False
        self._previous: Any = None
        self._installed = False

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self._received:
            os.write(2, b"\nSecond Ctrl-C: stopped at once, without writing a checkpoint.\n")
            os._exit(EXIT_STATUS)
        self._received = True
        os.write(2, b"\nCtrl-C: stopping after this batch with last.ckpt written (Ctrl-C again to stop at once).\n")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._received = False
        # only the main thread handles signals; a process started with SIGINT ignored (a background job) keeps it so
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._note)
            self._installed = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.world_size == 1:  # nothing to agree on: stop after this very batch
            self._batches += 1
            self.poll(trainer, pl_module)
        else:
            super().on_train_batch_end(trainer, pl_module, *args)

    def poll(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._installed:
            return
        stop = self._received
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        written = save_last(trainer)  # a second Ctrl-C meanwhile still exits at once, the previous last.ckpt whole
        self._restore()
        raise Interrupted(trainer.global_step, written)

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False
