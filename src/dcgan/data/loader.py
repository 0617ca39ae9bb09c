"""Resumable batch orders: indexing one in-memory uint8 tensor, or DataLoader workers decoding files."""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ShardedPermutation:
    """Per-epoch order of ``n`` items for one rank: a seeded shuffle, split evenly across ranks.

    Every rank computes the same permutation from ``(seed, epoch)`` and takes every
    ``world_size``-th item from ``rank`` on, trimmed so all ranks get the same count
    (DDP ranks must run the same number of steps).
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if world_size > n:
            raise ValueError(
                f"Cannot shard {n} images across {world_size} processes: each needs at least one. "
                "Use fewer trainer.devices / trainer.num_nodes or a larger data set."
            )
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.n // self.world_size

    def indices(self, epoch: int) -> torch.Tensor:
        if self.shuffle:
            # seed * prime + epoch: seeds s and s+1 do not share orders one epoch apart
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        else:
            order = torch.arange(self.n)
        return order[self.rank :: self.world_size][: len(self)]


class ResumableBatches:
    """One pass of batches per ``iter()``, in the order of ``order``; Lightning saves and restores its position.

    The loader counts its own epochs (a new pass starts once the previous one trained any
    batch or was exhausted) rather than taking Lightning's epoch number, which counts a pass
    cut short by ``max_steps`` as finished. ``consumed`` counts batches the training loop has
    actually used: the DataModule bumps it when a batch reaches the device, which stays right
    even where Lightning (or DataLoader workers) fetch ahead of the batch it trains on.
    Subclasses say how the batch at a list of indices is made (:meth:`_pass`).
    """

    def __init__(self, order: ShardedPermutation, batch_size: int, drop_last: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size}: expected a positive integer.")
        if drop_last and len(order) < batch_size:
            raise ValueError(
                f"data.batch_size={batch_size} is larger than the {len(order)} images each process gets, so "
                "no full batch is left (the last partial batch is dropped): lower data.batch_size."
            )
        self.order, self.batch_size, self.drop_last = order, batch_size, drop_last
        self.epoch, self.consumed = 0, 0
        self._resume_at: int | None = None
        self._pass_done = False

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _pass(self, batches: list[torch.Tensor]) -> Iterator[Any]:
        """The batches at these index lists, in this order."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        if self._resume_at is not None:
            start, self._resume_at = self._resume_at, None
            if start >= len(self):  # saved right at the end of a pass
                self.epoch, start = self.epoch + 1, 0
        else:
            start = 0
            if self.consumed or self._pass_done:  # the previous pass trained (or ran out): next epoch
                self.epoch += 1
        self._pass_done = False
        self.consumed = start
        idx = self.order.indices(self.epoch)
        plan = [idx[b * self.batch_size : (b + 1) * self.batch_size] for b in range(start, len(self))]
        for b, batch in enumerate(self._pass(plan), start):
            # Lightning stops asking once it has len(self) batches, so mark the pass done at the last one.
            self._pass_done = b == len(self) - 1
            yield batch

    def _layout(self) -> dict[str, int]:
        """What the saved position means: the same numbers must hold when resuming."""
        o = self.order
        return {"num_images": o.n, "seed": o.seed, "world_size": o.world_size, "batch_size": self.batch_size}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, **self._layout()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = {k: state.get(k) for k in self._layout()}
        if saved != self._layout():
            diff = ", ".join(f"{k}={saved[k]} (now {v})" for k, v in self._layout().items() if saved[k] != v)
            raise ValueError(
                f"The checkpoint's data position was saved with {diff}. Resume with the original data, "
                "seed, data.batch_size and number of devices, or start a new run without ckpt_path."
            )
        self.epoch, self._resume_at, self._pass_done = state["epoch"], state["consumed"], False


class TensorBatchLoader(ResumableBatches):
    """``images[idx]`` (or ``(images[idx], labels[idx])``) batches of one in-memory uint8 tensor.

    ``pin_memory`` (a run on CUDA): each batch is gathered into page-locked memory by a background thread, two
    batches ahead, so that Lightning's non-blocking copy to the GPU overlaps the step before it and the training
    loop never waits on the gather (torch's indexing releases the GIL). The order is the same either way.
    """

    def __init__(
        self,
        images: torch.Tensor,
        order: ShardedPermutation,
        batch_size: int,
        drop_last: bool = True,
        labels: torch.Tensor | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(order, batch_size, drop_last)
        self.images, self.labels, self.pin_memory = images, labels, pin_memory

    def _gather(self, batch: torch.Tensor) -> Any:
        images = self.images[batch]
        labels = None if self.labels is None else self.labels[batch]
        if self.pin_memory:
            images = images.pin_memory()
            labels = None if labels is None else labels.pin_memory()
        return images if labels is None else (images, labels)

    def _pass(self, batches: list[torch.Tensor]) -> Iterator[Any]:
        if not self.pin_memory:
            yield from (self._gather(batch) for batch in batches)
            return
        device = torch.cuda.current_device() if torch.cuda.is_initialized() else None  # this rank's GPU
        yield from _prefetched(self._gather, batches, depth=2, device=device)


def _prefetched(
    gather: Callable[[torch.Tensor], Any], batches: list[torch.Tensor], depth: int, device: int | None = None
) -> Iterator[Any]:
    """``gather(b)`` for each batch, computed by a thread up to ``depth`` batches ahead; stops it when abandoned.

    ``device``: the CUDA device the thread works for (pinning registers memory with the current device, and a new
    thread's is GPU 0, not this DDP rank's), as torch's own pinning thread does.
    """
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple[bool, Any]) -> bool:
        """Put ``item`` unless the consumer left; whether it was put."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        if device is not None:
            torch.cuda.set_device(device)
        try:
            for batch in batches:
                if not offer((True, gather(batch))):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            offer((False, err))
            return
        offer((False, None))

    thread = threading.Thread(target=produce, name="dcgan-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = ready.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()


class _PlannedBatches(Sampler[list[int]]):
    """A batch sampler that yields the index lists it was last given: the pass a :class:`WorkerBatchLoader` plans."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class WorkerBatchLoader(ResumableBatches):
    """Batches of a map-style ``dataset`` decoded by DataLoader workers, in the resumable order.

    The order lives here, not in a sampler of Lightning's choosing: a resumed run asks the
    workers for the rest of the saved pass, and under DDP each rank takes its shard of the same
    permutation. This is not a ``DataLoader`` subclass on purpose: Lightning leaves other
    iterables alone instead of swapping in its own ``DistributedSampler``. The workers' seeds
    come from a private generator, so starting them never draws from the global RNG. The workers
    ignore Ctrl-C: it reaches the whole process group, and the main process stops at a batch boundary
    (``dcgan.lightning.interrupt``) with workers that are still there to finish the batch.
    """

    def __init__(
        self,
        dataset: Dataset,
        order: ShardedPermutation,
        batch_size: int,
        num_workers: int,
        drop_last: bool = True,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(order, batch_size, drop_last)
        self._plan = _PlannedBatches()
        self.loader = DataLoader(
            dataset,
            batch_sampler=self._plan,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(order.seed),
            collate_fn=collate_fn,
            worker_init_fn=_ignore_interrupts if num_workers > 0 else None,
            pin_memory=pin_memory,  # torch's pinning thread; Lightning then copies to the GPU without blocking
        )

    def _pass(self, batches: list[torch.Tensor]) -> Iterator[Any]:
        self._plan.batches = [b.tolist() for b in batches]
        yield from self.loader


def _ignore_interrupts(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
