"""Training throughput: the project's Lightning run vs a plain PyTorch loop, same networks, same process.

For each net config (``--sizes``; default 32px gray and 64px RGB, ngf = ndf = 64, nz = 100, batch
128, synthetic uint8 images already in memory) and each speed-switch set (``--switches``) it times

* (a) **plain**: a PyTorch loop written here with the project's ``Generator``/``Discriminator``,
  ``d_loss_bce``/``g_loss_nonsaturating`` and ``Adam(lr=2e-4, betas=(0.5, 0.999))`` for each net,
  doing what ``DCGAN.training_step`` does: batches by indexing a seeded permutation of the uint8
  tensor, moved to the device and converted to float [-1, 1] (as the DataModule's
  ``on_after_batch_transfer``); z ~ N(0, 1); fake = G(z); a D step on real and fake.detach(); a G
  step with the non-saturating loss on D(fake), with D's parameters frozen (``requires_grad_(False)``,
  what Lightning's ``toggle_optimizer`` does);
* (b) **lightning**: the real ``dcgan.lightning.module.DCGAN`` (built from the same ``_target_`` configs as
  the tests) driven by ``L.Trainer(max_steps=...)`` as in a normal run: a TensorBoardLogger and the
  project's ``GANCheckpoint`` (``every_n_train_steps`` huge, ``save_last=True``) in a temporary
  folder, ``log_every_n_steps=10``, progress bar and model summary off, data served by an
  ``InMemoryDataModule`` subclass through the project's ``TensorBatchLoader``.

What is timed (``time.perf_counter``; ``torch.cuda.synchronize()`` at both ends on CUDA): after
``--warmup`` untimed batches, ``--steps`` whole training iterations. In Lightning, from the
``on_train_batch_start`` of batch W (W = warm-up) to the ``on_train_batch_start`` of batch W + S,
measured by a callback, so it includes everything the Trainer does per batch (fetch, transfer
hook, hooks, ``training_step``, logging, checkpoint checks) but not the Trainer start-up, the
warm-up, or the final ``last.ckpt`` save. In the plain loop, the same span: from batch W's start
of training (after its fetch and conversion) to batch W + S's. img/s = S * batch / seconds.

Each config runs ``--repeats`` repetitions, alternating the side that goes first (plain, lightning,
then lightning, plain, ...), each with freshly built and seeded networks; the table shows the
median img/s of each side (min-max in brackets), the ratio lightning / plain of the medians, and
the peak memory of each side: on CUDA ``torch.cuda.max_memory_allocated`` (reset before each run),
on CPU the process's peak RSS during each run (Linux ``VmHWM``, reset before each run through
``/proc/self/clear_refs``; where that is unavailable, the process max RSS since start). The last
column is the largest share of all CPUs that *other* processes used during a timed window (``/proc/stat``
busy time minus this process's CPU time): on a shared 2-core machine a neighbour's job slows a run
several-fold (OpenMP threads fighting over cores), so a repetition where it tops 10% is discarded and
run again (``--busy-retries`` per config), and the summary warns about rows that stayed contended.

Defaults: warm-up 5 batches, then 10 timed batches at 32px and 5 at 64px (``--steps``), 3 repetitions:
about 10 minutes on 2 CPU cores with the default switch sets. On a CPU the step time is steady from the
second batch on (within ~3%); the run-to-run spread on a shared VM is larger (~5%), so to judge a ratio
to within a percent or two use more steps and repetitions, e.g. ``--steps 30 --repeats 5``.

Speed switches (``--switches``: a comma list of sets, each set one switch or several joined by ``+``):

* ``none``: fp32, contiguous (NCHW), foreach Adam, no compile;
* ``channels_last``: NHWC nets and batches (``model.channels_last``);
* ``bf16``: bf16 autocast (``Trainer(precision="bf16-mixed")``; in the plain loop
  ``torch.autocast(device_type, dtype=torch.bfloat16)`` around the whole step, as Lightning's
  precision plugin wraps the whole ``training_step``, backward and optimizer steps included);
* ``compile``: ``torch.compile`` of G and D in place (``model.compile``; ``nn.Module.compile()``);
  compilation happens in the warm-up, the dynamo cache is reset before each run;
* ``fused``: fused Adam (``optim.fused=True``);
* ``cudnn_benchmark``: ``Trainer(benchmark=True)`` / ``torch.backends.cudnn.benchmark`` (CUDA only,
  dropped with a note on CPU);
* ``best``: channels_last+bf16, what ``train.py`` turns on by default on a CPU with native bf16
  (fused Adam measured no faster on CPU, within noise).

The last lines compare Lightning with the best switches (channels_last+bf16) with the plain loop,
switches off, at 64px (issue target on 2 CPU cores: >= 1.2x; with switches off lightning/plain >= 0.97).

``torch.set_float32_matmul_precision`` is left at its default: these nets are convolutions only (no
``nn.Linear``/matmul), so it does not change what runs; cuDNN convolutions follow
``torch.backends.cudnn.allow_tf32``, left at PyTorch's default (on) for both sides alike.

Run from the repository root::

    .venv/bin/python bench/throughput.py                                 # default, < 10 min on 2 cores
    .venv/bin/python bench/throughput.py --switches none,best --sizes 64
    .venv/bin/python bench/throughput.py --device cuda --switches none,best,best+cudnn_benchmark,compile
    .venv/bin/python bench/throughput.py --steps 2 --warmup 1 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from dcgan.lightning.callbacks import GANCheckpoint
from dcgan.data.base import InMemoryDataModule
from dcgan.objective.losses import d_loss_bce, g_loss_nonsaturating
from dcgan.lightning.module import DCGAN
from dcgan.nets import Discriminator, Generator

SWITCHES = ("channels_last", "bf16", "compile", "fused", "cudnn_benchmark")
BEST = frozenset({"channels_last", "bf16"})  # the measured-fastest set on CPU; the CPU defaults
DEFAULT_SWITCHES = "none,channels_last,bf16,best,fused"
DEFAULT_STEPS = "32:10,64:5"  # timed batches per run, per image size: keeps the default run near 10 min on 2 cores
DEFAULT_CHANNELS = {32: 1, 64: 3}  # 32px gray, 64px RGB; other sizes RGB unless written SIZE:CHANNELS
LR, BETAS = 2e-4, (0.5, 0.999)
MIB = 2**20


# --- configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetConfig:
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
            "nz": self.nz,
            "ngf": self.ngf,
            "image_size": self.image_size,
            "channels": self.channels,
        }

    def discriminator_cfg(self) -> dict[str, Any]:
        return {
            "_target_": "dcgan.nets.Discriminator",
            "ndf": self.ndf,
            "image_size": self.image_size,
            "channels": self.channels,
        }


def switch_label(switches: frozenset[str]) -> str:
    if not switches:
        return "none"
    names = "+".join(s for s in SWITCHES if s in switches)
    return f"best ({names})" if switches == BEST else names


def parse_switch_sets(text: str) -> list[frozenset[str]]:
    """'none,bf16+channels_last,best' -> [set(), {bf16, channels_last}, BEST], in order, without repeats."""
    sets: list[frozenset[str]] = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        chosen: set[str] = set()
        for name in filter(None, (n.strip() for n in token.split("+"))):
            if name == "best":
                chosen |= BEST
            elif name in SWITCHES:
                chosen.add(name)
            elif name != "none":
                raise SystemExit(f"--switches: unknown switch {name!r}; choose from none, {', '.join(SWITCHES)}, best.")
        if frozenset(chosen) not in sets:
            sets.append(frozenset(chosen))
    if not sets:
        raise SystemExit("--switches: give at least one set, e.g. none")
    return sets


def parse_sizes(text: str, ngf: int, ndf: int, nz: int) -> list[NetConfig]:
    configs = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        size_text, _, channels_text = token.partition(":")
        size = int(size_text)
        channels = int(channels_text) if channels_text else DEFAULT_CHANNELS.get(size, 3)
        configs.append(NetConfig(size, channels, ngf=ngf, ndf=ndf, nz=nz))
    return configs


def parse_steps(text: str) -> Callable[[int], int]:
    """'15' (every size) or '32:24,64:10' (per size; sizes not named get the largest size's value below)."""
    if ":" not in text:
        steps = int(text)
        return lambda size: steps
    table = {int(k): int(v) for k, v in (item.split(":") for item in text.split(",") if item.strip())}

    def lookup(size: int) -> int:
        if size in table:
            return table[size]
        smaller = [k for k in table if k <= size]
        return table[max(smaller)] if smaller else table[min(table)]

    return lookup


# --- measurement helpers ----------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of one run: CUDA allocator peak, or the process's peak RSS (reset through clear_refs)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_kind = "peak RSS"
        if device.type != "cuda" and not self._reset_hwm():
            self.cpu_kind = "process max RSS since start"  # cannot reset: ru_maxrss is monotonic

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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_images(n: int, cfg: NetConfig, seed: int) -> torch.Tensor:
    """Random uint8 (N, C, S, S): the content does not matter for speed."""
    shape = (n, cfg.channels, cfg.image_size, cfg.image_size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def fresh_compile_cache() -> None:
    """New networks each run: start dynamo from scratch so runs do not pile up recompilations."""
    import torch._dynamo

    torch._dynamo.reset()


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


@dataclass
class RunResult:
    img_per_s: float
    peak_bytes: int
    others_cpu: float | None  # share of all CPUs used by other processes in the timed window


@dataclass
class Row:
    cfg: NetConfig
    switches: frozenset[str]
    plain: list[RunResult] = field(default_factory=list)
    lightning: list[RunResult] = field(default_factory=list)

    @staticmethod
    def median(results: list[RunResult]) -> float:
        return statistics.median(r.img_per_s for r in results)

    @property
    def ratio(self) -> float:
        return self.median(self.lightning) / self.median(self.plain)


@dataclass(frozen=True)
class Plan:
    device: torch.device
    batch_size: int
    warmup: int
    steps: int
    seed: int


# --- (a) the plain PyTorch loop ----------------------------------------------------------------------


def batches(images: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless uint8 batches by indexing a seeded permutation per epoch (drop_last), like TensorBatchLoader."""
    gen = torch.Generator().manual_seed(seed)
    per_epoch = len(images) // batch_size
    while True:
        order = torch.randperm(len(images), generator=gen)
        for b in range(per_epoch):
            yield images[order[b * batch_size : (b + 1) * batch_size]]


def plain_step(cfg: NetConfig, switches: frozenset[str], device: torch.device) -> Callable[[torch.Tensor], None]:
    """Fresh networks and optimizers (seed first) and the hand-written training step on a float batch in [-1, 1]."""
    channels_last = "channels_last" in switches
    gen = Generator(nz=cfg.nz, ngf=cfg.ngf, image_size=cfg.image_size, channels=cfg.channels).to(device)
    disc = Discriminator(ndf=cfg.ndf, image_size=cfg.image_size, channels=cfg.channels).to(device)
    if channels_last:
        gen.to(memory_format=torch.channels_last)
        disc.to(memory_format=torch.channels_last)
    if "compile" in switches:
        gen.compile()
        disc.compile()
    fused = True if "fused" in switches else None
    opt_g = torch.optim.Adam(gen.parameters(), lr=LR, betas=BETAS, fused=fused)
    opt_d = torch.optim.Adam(disc.parameters(), lr=LR, betas=BETAS, fused=fused)
    gen.train()
    disc.train()

    def step(real: torch.Tensor) -> None:
        with autocast(device, "bf16" in switches):
            if channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            z = torch.randn(real.size(0), cfg.nz, device=device)
            fake = gen(z)
            real_logits = disc(real)
            fake_logits = disc(fake.detach())
            loss_d = d_loss_bce(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            disc.requires_grad_(False)  # G's loss puts no gradient into D
            loss_g = g_loss_nonsaturating(disc(fake))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            disc.requires_grad_(True)

    return step


def run_plain(images: torch.Tensor, cfg: NetConfig, switches: frozenset[str], plan: Plan, mem: PeakMemory) -> RunResult:
    device = plan.device
    if "compile" in switches:
        fresh_compile_cache()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = "cudnn_benchmark" in switches
    mem.reset()
    L.seed_everything(plan.seed, verbose=False)
    step = plain_step(cfg, switches, device)

    start = seconds = 0.0
    watch = CpuWatch()
    source = batches(images, plan.batch_size, plan.seed)
    for i in range(plan.warmup + plan.steps + 1):
        real = next(source).to(device).float().div_(127.5).sub_(1.0)  # uint8 -> [-1, 1], as to_unit_range
        if i == plan.warmup:
            synchronize(device)
            watch.start()
            start = time.perf_counter()
        elif i == plan.warmup + plan.steps:
            synchronize(device)
            seconds = time.perf_counter() - start
            others = watch.stop()
            break
        step(real)
    peak = mem.read()
    return RunResult(plan.steps * plan.batch_size / seconds, peak, others)


# --- (b) the project's LightningModule under a Trainer ------------------------------------------------


class SyntheticDataModule(InMemoryDataModule):
    """Serves a given uint8 tensor through the project's loader and float conversion."""

    name = "synthetic"

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int) -> None:
        super().__init__(image_size=images.shape[-1], channels=images.shape[1], batch_size=batch_size, seed=seed)
        self._given = images

    def load_images(self) -> torch.Tensor:
        return self._given


class WindowTimer(L.Callback):
    """Seconds from the start of batch ``warmup`` to the start of batch ``warmup + steps``, plus peak memory."""

    def __init__(self, warmup: int, steps: int, device: torch.device, mem: PeakMemory) -> None:
        self.warmup, self.steps, self.device, self.mem = warmup, steps, device, mem
        self.batches = 0
        self.start: float | None = None
        self.seconds: float | None = None
        self.peak = 0
        self.watch = CpuWatch()
        self.others: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.batches == self.warmup:
            synchronize(self.device)
            self.watch.start()
            self.start = time.perf_counter()
        elif self.batches == self.warmup + self.steps and self.start is not None:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start
            self.others = self.watch.stop()
            self.peak = self.mem.read()
        self.batches += 1


def run_lightning(
    images: torch.Tensor, cfg: NetConfig, switches: frozenset[str], plan: Plan, mem: PeakMemory
) -> RunResult:
    device = plan.device
    if "compile" in switches:
        fresh_compile_cache()
    mem.reset()
    L.seed_everything(plan.seed, verbose=False)
    module = DCGAN(
        generator=cfg.generator_cfg(),
        discriminator=cfg.discriminator_cfg(),
        optim={
            "_target_": "torch.optim.Adam",
            "_partial_": True,
            "lr": LR,
            "betas": list(BETAS),
            "fused": True if "fused" in switches else None,
        },
        seed=plan.seed,
        channels_last="channels_last" in switches,
        compile="compile" in switches,
    )
    timer = WindowTimer(plan.warmup, plan.steps, device, mem)
    with tempfile.TemporaryDirectory(prefix="dcgan-bench-") as tmp:
        checkpoint = GANCheckpoint(
            dirpath=os.path.join(tmp, "checkpoints"),
            filename="step{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=10**9,  # no periodic save inside the timed window; last.ckpt at the end
            save_top_k=-1,
            save_last=True,
        )
        trainer = L.Trainer(
            accelerator=device.type,
            devices=1,
            precision="bf16-mixed" if "bf16" in switches else "32-true",
            max_steps=2 * (plan.warmup + plan.steps + 1),  # global_step counts 2 optimizer steps per batch
            logger=TensorBoardLogger(tmp, name="tensorboard", version="", default_hp_metric=False),
            callbacks=[checkpoint, timer],
            log_every_n_steps=10,
            enable_progress_bar=False,
            enable_model_summary=False,
            benchmark=("cudnn_benchmark" in switches) if device.type == "cuda" else None,
            default_root_dir=tmp,
        )
        trainer.fit(module, datamodule=SyntheticDataModule(images, plan.batch_size, plan.seed))
    if timer.seconds is None:
        raise RuntimeError(f"Lightning stopped after {timer.batches} batches, before the timed window ended.")
    return RunResult(plan.steps * plan.batch_size / timer.seconds, timer.peak, timer.others)


# --- driver -------------------------------------------------------------------------------------------


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available.")
    return torch.device(choice)


def usable_switch_sets(sets: list[frozenset[str]], device: torch.device) -> list[frozenset[str]]:
    out: list[frozenset[str]] = []
    for s in sets:
        if "cudnn_benchmark" in s and device.type != "cuda":
            print(f"note: cudnn_benchmark is CUDA only; [{switch_label(s)}] runs without it on {device.type}.")
            s = s - {"cudnn_benchmark"}
        if "bf16" in s and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            print(f"note: this GPU has no bf16; skipping [{switch_label(s)}].")
            continue
        if s not in out:
            out.append(s)
    return out


CONTENDED = 0.10  # other processes used more than this share of the CPUs in a timed window


def max_others(results: list[RunResult]) -> float | None:
    values = [r.others_cpu for r in results if r.others_cpu is not None]
    return max(values) if values else None


def fmt_share(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def fmt_range(results: list[RunResult]) -> str:
    values = [r.img_per_s for r in results]
    return f"{statistics.median(values):8.1f} ({min(values):.0f}-{max(values):.0f})"


def print_table(rows: list[Row], mem_kind: str) -> None:
    headers = (
        "config",
        "switches",
        "plain img/s",
        "lightning img/s",
        "ratio b/a",
        f"{mem_kind} MiB plain/lightn.",
        "others' CPU (max)",
    )
    body = [
        (
            r.cfg.label,
            switch_label(r.switches),
            fmt_range(r.plain),
            fmt_range(r.lightning),
            f"{r.ratio:.3f}",
            f"{max(x.peak_bytes for x in r.plain) / MIB:.0f} / {max(x.peak_bytes for x in r.lightning) / MIB:.0f}",
            fmt_share(max_others(r.plain + r.lightning)),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for cells in body:
        print(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


def print_summary(rows: list[Row], device: torch.device) -> None:
    busy = [r for r in rows if (m := max_others(r.plain + r.lightning)) is not None and m > CONTENDED]
    if busy:
        names = ", ".join(f"{r.cfg.label} [{switch_label(r.switches)}]" for r in busy)
        print(
            f"WARNING: other processes used > {CONTENDED:.0%} of the CPUs during timed runs of {names}: "
            "those numbers are not trustworthy; rerun them on a quiet machine."
        )
    plain_off = {r.cfg: Row.median(r.plain) for r in rows if not r.switches}
    checks = [r for r in rows if not r.switches]
    for r in checks:
        verdict = "meets" if r.ratio >= 0.97 else "MISSES"
        print(f"switches off, {r.cfg.label}: lightning/plain = {r.ratio:.3f} ({verdict} the >= 0.97 target)")
    for cfg, base in plain_off.items():
        if cfg.image_size != 64:
            continue
        best = next((r for r in rows if r.cfg == cfg and r.switches == BEST), None)
        name = "CPU" if device.type == "cpu" else device.type.upper()
        if best is not None:
            speedup = Row.median(best.lightning) / base
            verdict = "meets" if speedup >= 1.2 else "MISSES"
            print(
                f"best {name} switches vs plain switches-off at 64px: {speedup:.2f}x "
                f"(lightning [{switch_label(BEST)}] / plain [none]; {verdict} the >= 1.2x target; "
                f"plain [best] / plain [none] = {Row.median(best.plain) / base:.2f}x)"
            )
        else:
            print(f"best {name} switches vs plain switches-off at 64px: not measured (add --switches none,best)")
        fastest = max((r for r in rows if r.cfg == cfg), key=lambda r: Row.median(r.lightning))
        print(
            f"fastest measured set at 64px: lightning [{switch_label(fastest.switches)}] = "
            f"{Row.median(fastest.lightning) / base:.2f}x plain [none]"
        )


def quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tensorboard|google).*")
    warnings.filterwarnings("ignore", message=r".*(tensor cores|Tensor Cores).*")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="32,64", help="image sizes, SIZE or SIZE:CHANNELS (default 32 gray, 64 RGB)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--steps", default=DEFAULT_STEPS, help=f"timed batches per run: N or SIZE:N,... ({DEFAULT_STEPS})"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches before the timed window")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per config (median)")
    parser.add_argument(
        "--switches",
        default=DEFAULT_SWITCHES,
        help="comma list of switch sets, each 'none' or switches joined by '+': "
        f"{', '.join(SWITCHES)}, best (= {'+'.join(s for s in SWITCHES if s in BEST)})",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--nz", type=int, default=100)
    parser.add_argument("--num-images", type=int, default=4096, help="synthetic images in memory (grown to fit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=3,
        help=f"per config: run a repetition again when other processes used > {CONTENDED * 100:.0f}%% of the CPUs",
    )
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.repeats < 1 or args.batch_size < 1:
        parser.error("--warmup must be >= 0, --repeats and --batch-size >= 1")

    quiet_lightning()
    device = pick_device(args.device)
    configs = parse_sizes(args.sizes, args.ngf, args.ndf, args.nz)
    switch_sets = usable_switch_sets(parse_switch_sets(args.switches), device)
    steps_for = parse_steps(args.steps)
    mem = PeakMemory(device)
    mem_kind = "CUDA max allocated" if device.type == "cuda" else mem.cpu_kind

    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {device.type} ({hw}), "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    print(
        f"batch {args.batch_size}, warm-up {args.warmup} batches, {args.repeats} interleaved repetitions; "
        "timed: S whole training iterations (batch W start -> batch W+S start), Trainer start-up excluded"
    )
    wall = time.perf_counter()
    rows: list[Row] = []
    for cfg in configs:
        steps = steps_for(cfg.image_size)
        if steps < 1:
            parser.error(f"--steps for {cfg.image_size}px must be >= 1")
        plan = Plan(device, args.batch_size, args.warmup, steps, args.seed)
        n = max(args.num_images, args.batch_size * (args.warmup + steps + 2))  # one epoch covers every batch
        images = synthetic_images(n, cfg, args.seed)
        print(f"\n{cfg.label}, ngf={cfg.ngf} ndf={cfg.ndf} nz={cfg.nz}: {n} images in memory, {steps} timed batches")
        for switches in switch_sets:
            row, retries = Row(cfg, switches), args.busy_retries
            rep = 0
            while rep < args.repeats:
                order = ("plain", "lightning") if rep % 2 == 0 else ("lightning", "plain")
                pair: dict[str, RunResult] = {}
                for side in order:
                    run = run_plain if side == "plain" else run_lightning
                    pair[side] = run(images, cfg, switches, plan, mem)
                p, lt = pair["plain"], pair["lightning"]
                busy = max_others([p, lt])
                retry = busy is not None and busy > CONTENDED and retries > 0
                print(
                    f"  [{switch_label(switches)}] rep {rep + 1}/{args.repeats} ({order[0]} first): "
                    f"plain {p.img_per_s:.1f} img/s, {p.peak_bytes / MIB:.0f} MiB | "
                    f"lightning {lt.img_per_s:.1f} img/s, {lt.peak_bytes / MIB:.0f} MiB | "
                    f"others' CPU {fmt_share(p.others_cpu)} / {fmt_share(lt.others_cpu)}"
                    + (" -> discarded (machine busy), run again" if retry else ""),
                    flush=True,
                )
                if retry:
                    retries -= 1
                    continue
                row.plain.append(p)
                row.lightning.append(lt)
                rep += 1
            rows.append(row)
        del images

    print(f"\nimg/s: median (min-max) of {args.repeats}; ratio b/a = lightning median / plain median")
    print_table(rows, mem_kind)
    print()
    print_summary(rows, device)
    print(f"total wall time: {time.perf_counter() - wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
