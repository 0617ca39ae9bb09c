"""Callbacks that tests add to real ``train.py`` runs (``+callbacks.probe._target_=tests.probes.RankProbe``).

They run in every process of a run, DDP ranks and launcher workers included, and write what they saw
to ``out`` so that a test can compare processes it did not start itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class RankProbe(L.Callback):
    """Per rank: a checksum of each batch, of each step's noise, the first global_step, G's final weights (parameters:
    without SyncBatchNorm each rank keeps its own BatchNorm running statistics)."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.record: dict[str, Any] = {"batches": [], "noise": [], "first_step": None}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["start"] = time.time()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.record["first_step"] is None:
            self.record["first_step"] = trainer.global_step
        images = batch[0] if isinstance(batch, (tuple, list)) else batch  # (images, labels) when conditional
        self.record["batches"].append(float(images.double().sum()))
        self.record["noise"].append(float(pl_module.noise(len(images)).double().sum()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        rank = trainer.global_rank
        self.record.update(
            rank=rank,
            world_size=trainer.world_size,
            end=time.time(),
            global_step=trainer.global_step,
            threads=torch.get_num_threads(),
        )
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{rank}.json").write_text(json.dumps(self.record))
        for net, name in ((pl_module.generator, "g"), (pl_module.discriminator, "d")):
            weights = {k: v.detach().cpu() for k, v in net.named_parameters()}
            torch.save(weights, self.out / f"rank{rank}_{name}.pt")
            buffers = {k: v.detach().cpu() for k, v in net.named_buffers()}  # BatchNorm running statistics
            torch.save(buffers, self.out / f"rank{rank}_{name}_buffers.pt")


class Meet(L.Callback):
    """A rendezvous of ``count`` processes at the start of fit, in ``folder``: each marks its arrival and waits (at
    most ``timeout_s``) for the others, then writes whether they all met. Jobs run one after the other never meet,
    however short; jobs run side by side always do, whatever the skew of their start-up."""

    def __init__(self, folder: str, count: int, timeout_s: float = 120.0) -> None:
        self.folder, self.count, self.timeout_s = Path(folder), count, timeout_s

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import os

        name = f"{os.getpid()}-{time.time_ns()}"
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{name}.here").touch()
        start = time.monotonic()
        while (arrived := len(list(self.folder.glob("*.here")))) < self.count:
            if time.monotonic() - start > self.timeout_s:
                break
            time.sleep(0.05)
        met = {"met": arrived >= self.count, "arrived": arrived, "waited_s": time.monotonic() - start}
        (self.folder / f"{name}.json").write_text(json.dumps(met))


class SignalAt(L.Callback):
    """Sends ``signal`` to this process once, at the end of the batch that reaches global step ``step`` (on every
    rank, or on ``rank`` only); not in a run resumed at or after that step (so a re-issued command runs through)."""

    def __init__(self, step: int, signal: str = "SIGTERM", rank: int | None = None) -> None:
        self.step, self.signal, self.rank, self.sent = step, signal, rank, False

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        other_rank = self.rank is not None and trainer.global_rank != self.rank
        self.sent = other_rank or trainer.global_step >= self.step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.sent and trainer.global_step >= self.step:
            import os
            import signal

            self.sent = True
            os.kill(os.getpid(), signal.Signals[self.signal])


class SlowBatches(L.Callback):
    """Sleeps ``seconds`` after every batch: a run whose length in wall time a test can plan."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: Any) -> None:
        time.sleep(self.seconds)


class SlowSaves(L.Callback):
    """Makes every checkpoint file write take ``seconds``: the bytes go out in 20 pieces, and ``marker`` holds
    the number of saves begun, so that a test can kill the process in the middle of one."""

    def __init__(self, seconds: float, marker: str) -> None:
        import io

        original, marker_path, begun = torch.save, Path(marker), [0]

        def slow_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            if not hasattr(f, "fileno"):
                return original(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            original(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            begun[0] += 1
            marker_path.write_text(str(begun[0]))
            piece = -(-len(data) // 20)
            for i in range(0, len(data), piece):
                f.write(data[i : i + piece])
                f.flush()
                time.sleep(seconds / 20)
            return None

        torch.save = slow_save


class LossTrace(L.Callback):
    """Writes, per batch, every logged loss and D output (``loss/*``, ``d/*``) and, at the end, a checksum of G's and
    D's weights to ``out`` (JSON): what tests/test_trajectories.py compares with values recorded earlier."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        logged = trainer.callback_metrics
        self.steps.append({k: float(v) for k, v in sorted(logged.items()) if k.startswith(("loss/", "d/"))})

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        nets = {"g": pl_module.generator, "d": pl_module.discriminator, "g_ema": pl_module.generator_ema}
        sums = {k: float(sum(p.detach().double().sum() for p in net.parameters())) for k, net in nets.items() if net}
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps({"steps": self.steps, "weights": sums}, indent=1))


class FullDisk(L.Callback):
    """A disk that fills up: ``free_bytes`` reports ``free`` bytes from the start, and the file save after
    ``saves`` successful ones writes half its bytes and fails with ENOSPC, as a full file system does."""

    def __init__(self, saves: int, free: int) -> None:
        import errno
        import io

        from dcgan.lightning import checkpoint_io

        original, done = torch.save, [0]
        checkpoint_io.free_bytes = lambda folder: free

        def filling_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            if not hasattr(f, "fileno"):
                return original(obj, f, *args, **kwargs)
            if done[0] < saves:
                done[0] += 1
                return original(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            original(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        torch.save = filling_save


class CollectiveCount(L.Callback):
    """Counts the calls of each of torch.distributed's collectives between one batch start and the next, per
    batch, and writes them (``rank<N>_collectives.json``) at the end: what a training step costs in host syncs."""

    NAMES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast",
             "broadcast_object_list", "barrier", "reduce", "reduce_scatter", "gather", "scatter")  # fmt: skip

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.per_batch: list[dict[str, int]] = []
        self._calls: dict[str, int] = {}
        self._started = False

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        import torch.distributed as dist

        for name in self.NAMES:
            original = getattr(dist, name)

            def counted(*a: Any, _original: Any = original, _name: str = name, **k: Any) -> Any:
                self._calls[_name] = self._calls.get(_name, 0) + 1
                return _original(*a, **k)

            setattr(dist, name, counted)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self._started:
            self.per_batch.append(self._calls)
        self._calls, self._started = {}, True

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.per_batch.append(self._calls)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}_collectives.json").write_text(json.dumps(self.per_batch))
