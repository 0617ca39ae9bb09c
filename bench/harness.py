"""What every training bench measures with: a window timer, other processes' CPU share, peak memory.

How they are used, and why: docs/performance.md, "How the benches measure".
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

MIB = 2**20
CONTENDED = 0.10  # other processes used more than this share of the CPUs in a timed window: not trustworthy


@dataclass(frozen=True)
class NetConfig:
    """The nets a bench trains: DCGAN's G and D at one image size."""

    image_size: int
    channels: int
    ngf: int = 64
    ndf: int = 64
    nz: int = 100

    @property
    def label(self) -> str:
        return f"{self.image_size}px {'gray' if self.channels == 1 else 'RGB'}"

    def generator_cfg(self) -> dict[str, Any]:
        return {
            "_target_": "dcgan.nets.Generator",
            **{k: getattr(self, k) for k in ("nz", "ngf", "image_size", "channels")},
        }

    def discriminator_cfg(self) -> dict[str, Any]:
        return {
            "_target_": "dcgan.nets.Discriminator",
            **{k: getattr(self, k) for k in ("ndf", "image_size", "channels")},
        }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available.")
    return torch.device(choice)


def synthetic_images(n: int, cfg: NetConfig, seed: int) -> torch.Tensor:
    """Random uint8 (N, C, S, S): the content does not matter for speed."""
    shape = (n, cfg.channels, cfg.image_size, cfg.image_size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def fresh_compile_cache() -> None:
    """New networks each run: start dynamo from scratch so runs do not pile up recompilations."""
    import torch._dynamo

    torch._dynamo.reset()


def quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tensorboard|google).*")
    warnings.filterwarnings("ignore", message=r".*(tensor cores|Tensor Cores).*")


class PeakMemory:
    """Peak memory of one run: CUDA allocator peak, or the process's peak RSS (reset through clear_refs)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_kind = "peak RSS"
        if device.type != "cuda" and not self._reset_hwm():
            self.cpu_kind = "process max RSS since start"  # cannot reset: ru_maxrss is monotonic

    @property
    def kind(self) -> str:
        return "CUDA max allocated" if self.device.type == "cuda" else self.cpu_kind

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # Linux >= 4.0: resets VmHWM to the current RSS
            return True
        except OSError:
            return False

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        with contextlib.suppress(OSError, AttributeError):  # hand freed heap back, so RSS starts low
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self._reset_hwm()

    def read(self) -> int:
        """Bytes."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024


class CpuWatch:
    """Share of all CPUs that other processes used during a window: /proc/stat busy time minus our own.

    A bench on a shared machine is only as good as its quietest run; this flags the runs that were not quiet.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            with open("/proc/stat") as f:
                ticks = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        busy = self._busy_seconds()
        self._start = None if busy is None else (time.perf_counter(), busy, time.process_time())

    def stop(self) -> float | None:
        busy = self._busy_seconds()
        if self._start is None or busy is None:
            return None
        wall0, busy0, own0 = self._start
        wall = time.perf_counter() - wall0
        if wall < 0.5:  # /proc/stat counts in clock ticks (10 ms): too coarse for a shorter window
            return None
        others = (busy - busy0) - (time.process_time() - own0)
        return max(0.0, others) / (wall * (os.cpu_count() or 1))


def fmt_share(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def contended(share: float | None) -> bool:
    return share is not None and share > CONTENDED


class WindowTimer(L.Callback):
    """Seconds from the start of batch ``warmup`` to the start of batch ``warmup + steps``: S whole iterations.

    A plain loop calls ``tick()`` at the start of each batch; under a Trainer the ``on_train_batch_start`` hook
    does. When the window closes it sets ``seconds``, ``others`` (other processes' CPU share, see ``CpuWatch``)
    and, given a ``PeakMemory``, ``peak`` (bytes); it writes ``{"seconds": ...}`` to ``out`` when given and,
    with ``stop``, stops the Trainer.
    """

    def __init__(
        self,
        warmup: int,
        steps: int,
        device: torch.device | str = "cpu",
        mem: PeakMemory | None = None,
        out: str | None = None,
        stop: bool = False,
    ) -> None:
        self.warmup, self.steps, self.device, self.mem = warmup, steps, torch.device(device), mem
        self.out, self.stop = (Path(out) if out else None), stop
        self.batches = 0
        self.start: float | None = None
        self.seconds: float | None = None
        self.others: float | None = None
        self.peak = 0
        self.watch = CpuWatch()

    def rate(self, batch_size: int) -> float:
        """Images per second over the window."""
        if self.seconds is None:
            raise RuntimeError(f"stopped after {self.batches} batches, before the timed window ended")
        return self.steps * batch_size / self.seconds

    def tick(self) -> bool:
        """Call at the start of every batch; True once the window has closed."""
        if self.batches == self.warmup:
            synchronize(self.device)
            self.watch.start()
            self.start = time.perf_counter()
        elif self.batches == self.warmup + self.steps and self.start is not None:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start
            self.others = self.watch.stop()
            self.peak = self.mem.read() if self.mem is not None else 0
            if self.out is not None:
                self.out.write_text(json.dumps({"seconds": self.seconds}))
        self.batches += 1
        return self.seconds is not None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.tick() and self.stop:
            trainer.should_stop = True
