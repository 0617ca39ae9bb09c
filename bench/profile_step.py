"""Where a training batch's time goes: ``torch.profiler`` over the plain loop and the project's DCGAN under a Trainer.

Both arms are bench/throughput.py's (same nets, synthetic images in memory); after ``--warmup`` batches it profiles
``--batches`` whole iterations of each and prints wall s/batch, the top ops by self CPU time side by side, and the
time outside any aten op. How to read it: docs/performance.md, "How the benches measure". From the repository root::

    .venv/bin/python bench/profile_step.py                         # 64px RGB, batch 128, switches off (fp32, NCHW)
    .venv/bin/python bench/profile_step.py --switches best         # channels_last + bf16
    .venv/bin/python bench/profile_step.py --batches 2 --warmup 1 --batch-size 32   # smoke test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import torch
from torch.profiler import ProfilerActivity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*
from bench.harness import NetConfig, WindowTimer, pick_device, quiet_lightning, synthetic_images
from bench.plain_loop import batches, timed_steps
from bench.throughput import Plan, lightning_fit, lightning_module, parse_switch_sets, plain_gan, switch_label
from dcgan.data.base import to_unit_range


class ProfiledWindow(WindowTimer):
    """A ``WindowTimer`` whose window is also profiled: the profiler starts before the clock and stops after it."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        super().__init__(warmup, steps, device)
        cuda = [ProfilerActivity.CUDA] if device.type == "cuda" else []
        self.profiler = torch.profiler.profile(activities=[ProfilerActivity.CPU, *cuda])

    def tick(self) -> bool:
        if self.batches == self.warmup:
            self.profiler.start()
        was_open = self.seconds is None
        closed = super().tick()
        if closed and was_open:
            self.profiler.stop()  # after the clock: the profiler's post-processing is not in the wall time
        return closed

    def per_batch(self) -> tuple[float, dict[str, float]]:
        """Wall ms per batch, and self CPU ms per batch of each op (profiler event name)."""
        ms = {e.key: e.self_cpu_time_total / 1e3 / self.steps for e in self.profiler.key_averages()}
        return 1e3 * self.seconds / self.steps, ms


def profile_plain(images: torch.Tensor, cfg: NetConfig, switches: frozenset[str], plan: Plan) -> ProfiledWindow:
    L.seed_everything(plan.seed, verbose=False)
    gan = plain_gan(cfg, switches, plan.device)
    reals = (to_unit_range(b.to(plan.device)) for b in batches(images, plan.batch_size, plan.seed))
    return timed_steps(gan, reals, ProfiledWindow(plan.warmup, plan.steps, plan.device))


def profile_lightning(images: torch.Tensor, cfg: NetConfig, switches: frozenset[str], plan: Plan) -> ProfiledWindow:
    L.seed_everything(plan.seed, verbose=False)
    window = ProfiledWindow(plan.warmup, plan.steps, plan.device)
    module = lightning_module(cfg, switches, plan.seed)
    lightning_fit(module, images, switches, plan, plan.warmup + plan.steps + 1, window)
    if window.seconds is None:
        raise RuntimeError(f"Lightning stopped after {window.batches} batches, before the profiled window ended.")
    return window


def report(plain: ProfiledWindow, lightning: ProfiledWindow, top: int) -> None:
    (wall_p, ops_p), (wall_l, ops_l) = plain.per_batch(), lightning.per_batch()
    names = sorted(set(ops_p) | set(ops_l), key=lambda k: -max(ops_p.get(k, 0.0), ops_l.get(k, 0.0)))[:top]
    totals = ("in other events (autograd engine, optimizer wrappers)", "outside any event (Python: loop, Lightning)",
              "outside aten ops (wall - in aten ops)")  # fmt: skip
    width = max(len(n) for n in (*names, *totals))
    print(f"\nwall: plain {wall_p / 1e3:.3f} s/batch, lightning {wall_l / 1e3:.3f} s/batch (lightning/plain "
          f"{wall_l / wall_p:.3f}; both under the profiler, which adds a few us per op)")  # fmt: skip

    def row(name: str, a: float, b: float) -> None:
        print(f"{name:<{width}}  {a:12.1f}  {b:16.1f}  {b - a:+11.1f}")

    print(f"\n{'op (self CPU time)':<{width}}  {'plain ms/bat':>12}  {'lightning ms/bat':>16}  {'difference':>11}")
    for name in names:
        row(name, ops_p.get(name, 0.0), ops_l.get(name, 0.0))
    aten_p = sum(v for k, v in ops_p.items() if k.startswith("aten::"))
    aten_l = sum(v for k, v in ops_l.items() if k.startswith("aten::"))
    print()
    row("wall", wall_p, wall_l)
    row("in aten ops", aten_p, aten_l)
    all_p, all_l = sum(ops_p.values()), sum(ops_l.values())
    row(totals[0], all_p - aten_p, all_l - aten_l)
    row(totals[1], wall_p - all_p, wall_l - all_l)
    row(totals[2], wall_p - aten_p, wall_l - aten_l)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="image size")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="unprofiled batches first")
    parser.add_argument("--batches", type=int, default=5, help="profiled batches")
    parser.add_argument("--switches", default="none", help="one switch set as in throughput.py: none, best, ...")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--top", type=int, default=15, help="ops in the table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sets = parse_switch_sets(args.switches)
    if len(sets) != 1 or "compile" in sets[0]:
        parser.error(f"--switches {args.switches!r}: give one set without compile, e.g. none or best")
    if args.warmup < 1 or args.batches < 1:
        parser.error("--warmup and --batches must be >= 1 (the first batch builds caches)")
    quiet_lightning()
    device, switches = pick_device(args.device), sets[0]
    cfg = NetConfig(args.size, args.channels, ngf=args.ngf, ndf=args.ndf)
    plan = Plan(device, args.batch_size, args.warmup, args.batches, args.seed)
    images = synthetic_images(args.batch_size * (args.warmup + args.batches + 2), cfg, args.seed)
    print(
        f"torch {torch.__version__}, {device.type}, {torch.get_num_threads()} threads; {cfg.label}, ngf={cfg.ngf} "
        f"ndf={cfg.ndf}, batch {args.batch_size}, switches [{switch_label(switches)}]; "
        f"{args.batches} profiled batches after {args.warmup}",
        flush=True,
    )
    plain = profile_plain(images, cfg, switches, plan)
    lightning = profile_lightning(images, cfg, switches, plan)
    report(plain, lightning, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
