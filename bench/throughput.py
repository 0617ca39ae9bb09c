"""Training throughput: the project's Lightning run vs the plain PyTorch loop, same networks, same process.

What is timed, the switch sets and the caveats: docs/performance.md, "How the benches measure".
Run from the repository root::

    .venv/bin/python bench/throughput.py                                 # default, < 10 min on 2 cores
    .venv/bin/python bench/throughput.py --switches none,best --sizes 64
    .venv/bin/python bench/throughput.py --device cuda --switches none,best,best+cudnn_benchmark,compile
    .venv/bin/python bench/throughput.py --steps 2 --warmup 1 --repeats 1   # smoke test

On CUDA a batch takes milliseconds, so each timed window is stretched to at least ``--min-window-s`` (2 s there by
default): a short plain-loop run first measures the pace of each configuration. Each row also gives the achieved
TFLOP/s (torch's FLOP counter on one training step: both nets, forward and backward) and, for known GPUs, the
device's dense bf16 peak beside it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*
from bench.harness import (
    CONTENDED,
    MIB,
    NetConfig,
    PeakMemory,
    WindowTimer,
    contended,
    fmt_share,
    fresh_compile_cache,
    pick_device,
    quiet_lightning,
    synthetic_images,
)
from bench.plain_loop import BETAS, LR, PlainGAN, batches, timed_steps
from dcgan.data.base import InMemoryDataModule, to_unit_range
from dcgan.lightning.callbacks import GANCheckpoint
from dcgan.lightning.module import DCGAN

SWITCHES = ("channels_last", "bf16", "compile", "fused", "cudnn_benchmark")
BEST = frozenset({"channels_last", "bf16"})  # the measured-fastest set on CPU; the CPU defaults
DEFAULT_SWITCHES = "none,channels_last,bf16,best,fused"
DEFAULT_STEPS = "32:10,64:10"  # timed batches per run and size; a 5-batch 64px window (10 s) spread 63-71 img/s
DEFAULT_CHANNELS = {32: 1, 64: 3}  # 32px gray, 64px RGB; other sizes RGB unless written SIZE:CHANNELS


# --- configuration ----------------------------------------------------------------------------------


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
    flops: float = 0.0  # per batch, both nets, forward and backward

    @staticmethod
    def median(results: list[RunResult]) -> float:
        return statistics.median(r.img_per_s for r in results)

    @property
    def ratio(self) -> float:
        return self.median(self.lightning) / self.median(self.plain)


# dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets; the first name that the
# device's name contains wins, so the longer names come first (H100 PCIe before H100, L40S before L40 before L4)
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
                    "L40": 181.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0}  # fmt: skip


def bf16_peak(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def flops_per_batch(cfg: NetConfig, batch_size: int, device: torch.device) -> float:
    """FLOPs of one training step of the plain loop (D on real and fake, G), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    gan = PlainGAN(cfg, device)
    real = torch.zeros(batch_size, cfg.channels, cfg.image_size, cfg.image_size, device=device)
    with FlopCounterMode(display=False) as counter:
        gan.step(real)
    return float(counter.get_total_flops())


def calibrated_steps(images: torch.Tensor, cfg: NetConfig, switches: frozenset[str], plan: Plan, min_s: float) -> int:
    """Timed batches for a window of at least ``min_s`` seconds at this configuration's pace (a plain-loop run)."""
    if min_s <= 0:
        return plan.steps
    probe = Plan(plan.device, plan.batch_size, plan.warmup, 10, plan.seed)
    pace = run_plain(images, cfg, switches, probe, PeakMemory(plan.device)).img_per_s / plan.batch_size
    return max(plan.steps, math.ceil(min_s * pace * 1.1))


@dataclass(frozen=True)
class Plan:
    device: torch.device
    batch_size: int
    warmup: int
    steps: int
    seed: int


# --- the two arms -----------------------------------------------------------------------------------


def plain_gan(cfg: NetConfig, switches: frozenset[str], device: torch.device) -> PlainGAN:
    """The reference loop's nets and optimizers with these switches (cudnn_benchmark is global: set by the run)."""
    flags = {s: s in switches for s in ("channels_last", "bf16", "compile", "fused")}
    return PlainGAN(cfg, device, **flags)


def run_plain(images: torch.Tensor, cfg: NetConfig, switches: frozenset[str], plan: Plan, mem: PeakMemory) -> RunResult:
    device = plan.device
    if "compile" in switches:
        fresh_compile_cache()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = "cudnn_benchmark" in switches
    mem.reset()
    L.seed_everything(plan.seed, verbose=False)
    gan = plain_gan(cfg, switches, device)
    reals = (to_unit_range(b.to(device)) for b in batches(images, plan.batch_size, plan.seed))  # as the DataModule
    timer = timed_steps(gan, reals, WindowTimer(plan.warmup, plan.steps, device))
    return RunResult(timer.rate(plan.batch_size), mem.read(), timer.others)


class SyntheticDataModule(InMemoryDataModule):
    """Serves a given uint8 tensor through the project's loader and float conversion."""

    name = "synthetic"

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int) -> None:
        super().__init__(image_size=images.shape[-1], channels=images.shape[1], batch_size=batch_size, seed=seed)
        self._given = images

    def load_images(self) -> torch.Tensor:
        return self._given


def lightning_module(cfg: NetConfig, switches: frozenset[str], seed: int) -> DCGAN:
    optim = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": LR, "betas": list(BETAS),
             "fused": True if "fused" in switches else None}  # fmt: skip
    return DCGAN(
        generator=cfg.generator_cfg(),
        discriminator=cfg.discriminator_cfg(),
        optim=optim,
        seed=seed,
        channels_last="channels_last" in switches,
        compile="compile" in switches,
    )


def lightning_fit(
    module: DCGAN, images: torch.Tensor, switches: frozenset[str], plan: Plan, n_batches: int, callback: L.Callback
) -> None:
    """``trainer.fit`` for ``n_batches`` batches as a normal run: TensorBoard, checkpoints (last.ckpt at the end)."""
    device = plan.device
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
            max_steps=2 * n_batches,  # global_step counts 2 optimizer steps per batch
            logger=TensorBoardLogger(tmp, name="tensorboard", version="", default_hp_metric=False),
            callbacks=[checkpoint, callback],
            log_every_n_steps=10,
            enable_progress_bar=False,
            enable_model_summary=False,
            benchmark=("cudnn_benchmark" in switches) if device.type == "cuda" else None,
            default_root_dir=tmp,
        )
        trainer.fit(module, datamodule=SyntheticDataModule(images, plan.batch_size, plan.seed))


def run_lightning(
    images: torch.Tensor, cfg: NetConfig, switches: frozenset[str], plan: Plan, mem: PeakMemory
) -> RunResult:
    if "compile" in switches:
        fresh_compile_cache()
    mem.reset()
    L.seed_everything(plan.seed, verbose=False)
    module = lightning_module(cfg, switches, plan.seed)
    timer = WindowTimer(plan.warmup, plan.steps, plan.device, mem)
    lightning_fit(module, images, switches, plan, plan.warmup + plan.steps + 1, timer)
    return RunResult(timer.rate(plan.batch_size), timer.peak, timer.others)


# --- driver -------------------------------------------------------------------------------------------


def usable_switch_sets(sets: list[frozenset[str]], device: torch.device) -> list[frozenset[str]]:
    out: list[frozenset[str]] = []
    for s in sets:
        if "cudnn_benchmark" in s and device.type != "cuda":
            print(f"note: cudnn_benchmark is CUDA only; [{switch_label(s)}] runs without it on {device.type}.")
            s = s - {"cudnn_benchmark"}
        if "bf16" in s and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            print(f"note: this GPU has no native bf16 (before sm80 it is emulated, slower than fp32): skipping "
                  f"[{switch_label(s)}].")  # fmt: skip
            continue
        if s not in out:
            out.append(s)
    return out


def max_others(results: list[RunResult]) -> float | None:
    values = [r.others_cpu for r in results if r.others_cpu is not None]
    return max(values) if values else None


def fmt_range(results: list[RunResult]) -> str:
    values = [r.img_per_s for r in results]
    return f"{statistics.median(values):8.1f} ({min(values):.0f}-{max(values):.0f})"


def print_table(rows: list[Row], mem_kind: str) -> None:
    headers = ("config", "switches", "plain img/s", "lightning img/s", "ratio b/a", f"{mem_kind} MiB plain/lightn.",
               "others' CPU (max)")  # fmt: skip
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
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for cells in body:
        print(" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


def print_summary(rows: list[Row], device: torch.device) -> None:
    busy = [r for r in rows if contended(max_others(r.plain + r.lightning))]
    if busy:
        names = ", ".join(f"{r.cfg.label} [{switch_label(r.switches)}]" for r in busy)
        print(
            f"WARNING: other processes used > {CONTENDED:.0%} of the CPUs during timed runs of {names}: "
            "those numbers are not trustworthy; rerun them on a quiet machine."
        )
    plain_off = {r.cfg: Row.median(r.plain) for r in rows if not r.switches}
    for r in (r for r in rows if not r.switches):
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
        "--min-window-s",
        type=float,
        default=None,
        help="stretch each timed window to at least this many seconds (default: 2 on CUDA, 0 on the CPU)",
    )
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
    min_s = args.min_window_s if args.min_window_s is not None else (2.0 if device.type == "cuda" else 0.0)
    peak = bf16_peak(hw) if device.type == "cuda" else None
    for cfg in configs:
        steps = steps_for(cfg.image_size)
        if steps < 1:
            parser.error(f"--steps for {cfg.image_size}px must be >= 1")
        flops = flops_per_batch(cfg, args.batch_size, device)
        print(f"\n{cfg.label}, ngf={cfg.ngf} ndf={cfg.ndf} nz={cfg.nz}: {flops / 1e9:.1f} GFLOP per batch")
        for switches in switch_sets:
            base = Plan(device, args.batch_size, args.warmup, steps, args.seed)
            n = max(args.num_images, args.batch_size * (args.warmup + 12))
            timed = calibrated_steps(synthetic_images(n, cfg, args.seed), cfg, switches, base, min_s)
            plan = Plan(device, args.batch_size, args.warmup, timed, args.seed)
            n = max(args.num_images, args.batch_size * (args.warmup + timed + 2))  # one epoch covers every batch
            images = synthetic_images(n, cfg, args.seed)
            print(f"  [{switch_label(switches)}]: {n} images in memory, {timed} timed batches")
            row, retries = Row(cfg, switches), args.busy_retries
            row.flops = flops
            rep = 0
            while rep < args.repeats:
                order = ("plain", "lightning") if rep % 2 == 0 else ("lightning", "plain")
                pair: dict[str, RunResult] = {}
                for side in order:
                    run = run_plain if side == "plain" else run_lightning
                    pair[side] = run(images, cfg, switches, plan, mem)
                p, lt = pair["plain"], pair["lightning"]
                retry = contended(max_others([p, lt])) and retries > 0
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
    print_table(rows, mem.kind)
    print()
    for r in rows:
        achieved = r.flops * Row.median(r.lightning) / args.batch_size / 1e12
        bf16 = peak is not None and "bf16" in r.switches
        versus = f" = {achieved / peak:.1%} of the {peak:.0f} TFLOP/s dense bf16 peak" if bf16 else ""
        print(f"{r.cfg.label} [{switch_label(r.switches)}]: lightning {achieved:.2f} TFLOP/s{versus}")
    print()
    print_summary(rows, device)
    print(f"total wall time: {time.perf_counter() - wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
