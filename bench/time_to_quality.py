"""Time to quality on MNIST 32x32: held-out FID after 2.5 / 5 / 10 minutes of the user's wall clock, over seeds.

Each run is its own process, its clock started at launch; arm ``plain`` is bench/plain_loop.py, any other is
``train.py data=mnist experiment=<name>``. Method, arms and scorers: docs/performance.md, "How the benches measure".
Run from the repository root (MNIST in torchvision's layout under the data dir), alone on the machine::

    .venv/bin/python bench/time_to_quality.py                    # 3+3+1 runs of 10 min: about 80 min
    .venv/bin/python bench/time_to_quality.py --budgets 0.5,1 --arms plain:1,mnist_fast:1 --samples 2000
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*
from bench.harness import NetConfig
from bench.plain_loop import PlainGAN, batches

ROOT = Path(__file__).resolve().parents[1]
T0_ENV = "DCGAN_BENCH_T0"  # the launch time of a run, set by the bench: every clock counts from there


def elapsed() -> float:
    """Seconds since this run was launched (or since this process started, run alone)."""
    return time.time() - float(os.environ.get(T0_ENV, _PROCESS_START))


_PROCESS_START = time.time()


class Snapshots(L.Callback):
    """Saves the generator ``sample`` uses (EMA when on) when the run's wall clock passes each budget; then stops."""

    def __init__(self, budgets: list[float], out: str, name: str) -> None:
        self.pending, self.out, self.name = sorted(budgets), Path(out), name

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        while self.pending and elapsed() >= self.pending[0] * 60:
            net = pl_module.generator_ema if pl_module.generator_ema is not None else pl_module.generator
            net = getattr(net, "_orig_mod", net)
            budget = self.pending.pop(0)
            torch.save(copy.deepcopy(net).float().cpu(), self.out / f"{self.name}_{budget:g}.pt")
            print(f"{self.name}: snapshot at {budget:g} min (step {trainer.global_step})", flush=True)
        if not self.pending:
            trainer.should_stop = True


def plain_run(data_dir: Path, budgets: list[float], out: Path, name: str, seed: int, batch_size: int) -> None:
    """The reference loop, fp32, as a user would write it; saves G and its EMA at each budget.

    The loop is the hand-written baseline (bench/plain_loop.py); the EMA is only a second view of the same run
    (arm ``plain+ema``), so it is the library's ``EMA`` rule (0.999 with warm-up), not a copy.
    """
    from dcgan.data.base import to_unit_range
    from dcgan.data.mnist import MNISTDataModule
    from dcgan.objective.ema import EMA

    L.seed_everything(seed, verbose=False)
    dm = MNISTDataModule(str(data_dir))  # decoded from the .gz files in this process: a user's cost
    dm.setup()
    gan = PlainGAN(NetConfig(image_size=32, channels=1))
    rule, average = EMA(0.999, warmup=True), copy.deepcopy(gan.generator).requires_grad_(False)
    pending = sorted(budgets)
    for steps, batch in enumerate(batches(dm.images, batch_size, seed), start=1):
        gan.step(to_unit_range(batch))
        rule.update(average, gan.generator, steps)
        while pending and elapsed() >= pending[0] * 60:
            budget = pending.pop(0)
            torch.save(gan.generator, out / f"{name}_{budget:g}.pt")
            torch.save(average, out / f"{name.replace('plain', 'plain+ema', 1)}_{budget:g}.pt")
            print(f"{name}: snapshot at {budget:g} min ({steps} batches)", flush=True)
        if not pending:
            return


def launch(arm: str, seed: int, args: argparse.Namespace, budgets: list[float]) -> float:
    """Run one arm for one seed in a new process; returns its wall time in seconds."""
    name = f"{arm}@{seed}"
    env = {**os.environ, T0_ENV: repr(time.time()), "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix="dcgan-ttq-") as tmp:
        if arm == "plain":
            cmd = [sys.executable, __file__, "--worker", "plain", "--seed", str(seed), "--name", name]
            cmd += ["--data-dir", str(args.data_dir), "--budgets", args.budgets, "--out", str(args.out)]
        else:
            limit = max(budgets) + 1  # minutes: a margin past the last budget; the snapshots stop the run
            cmd = [sys.executable, "train.py", "data=mnist", f"data.data_dir={args.data_dir}", f"seed={seed}"]
            experiment, *extra = arm.split("+")
            cmd += [] if experiment == "defaults" else [f"experiment={experiment}"]
            cmd += extra
            cmd += [
                f"trainer.max_time=00:00:{int(limit):02d}:{int(limit % 1 * 60):02d}",
                f"paths.output_dir={tmp}/run",
                f"paths.cache_dir={tmp}/cache",  # fresh: classifier and decode cache are first-use costs here
                "trainer.enable_progress_bar=false",
                "~callbacks.progress_bar",
                f"callbacks.quality.classifier_steps={args.classifier_steps}",
                "+callbacks.snapshots._target_=bench.time_to_quality.Snapshots",
                f"+callbacks.snapshots.budgets=[{args.budgets}]",
                f"+callbacks.snapshots.out={args.out}",
                f"+callbacks.snapshots.name='{name}'",  # quoted: an arm's overrides hold '=' and '+'
            ]
        start = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.time() - start
        (args.out / f"{name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}); log: {args.out / f'{name}.log'}")
    return seconds


def score_all(args: argparse.Namespace, runs: list[tuple[str, int]], budgets: list[float]) -> dict[str, Any]:
    """hfid and cfid of every snapshot, and the real-data floor on the same scorers."""
    from dcgan.data.mnist import MNISTDataModule
    from dcgan.metrics.build import Extractors, build_suite, real_batches
    from dcgan.metrics.protocols import Protocol
    from dcgan.metrics.suite import Settings

    dm = MNISTDataModule(str(args.data_dir), cache_dir=str(args.cache_dir))
    dm.prepare_data()
    dm.setup()
    n = args.samples
    protocols = [Protocol("hfid", n, "test"), Protocol("cfid", n, "test"), Protocol("class_balance", n)]
    how = Extractors(cache_dir=args.cache_dir, classifier_steps=args.classifier_steps, heldout_steps=args.heldout_steps)
    suite = build_suite(dm, protocols, how, Settings(seed=args.seed + 12345))
    floor = suite.compute(suite.extract(real_batches(dm, n, 500)), None)  # real train digits vs the test split
    print(f"real-data floor ({n} real training digits): {floor}", flush=True)
    scores: dict[str, Any] = {"floor": floor, "protocols": [p.name for p in protocols], "runs": {}}
    for arm, seed in runs:
        for label in [arm, f"{arm}+ema"] if arm == "plain" else [arm]:
            for budget in budgets:
                path = args.out / f"{label}@{seed}_{budget:g}.pt"
                if not path.is_file():
                    continue
                gen = torch.load(path, map_location="cpu", weights_only=False).eval()  # a module this bench saved
                with torch.no_grad():
                    result = suite.score(lambda z, labels, gen=gen: gen(z, labels).float(), gen.nz)
                scores["runs"].setdefault(label, {}).setdefault(str(seed), {})[f"{budget:g}"] = result
    return scores


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else float("nan"),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def table(scores: dict[str, Any], metric: str, budgets: list[float]) -> dict[str, dict[str, dict[str, float]]]:
    """``{arm: {budget: summary over seeds}}`` of ``metric``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for arm, seeds in scores["runs"].items():
        for b in budgets:
            values = [per[f"{b:g}"][metric] for per in seeds.values() if f"{b:g}" in per]
            if values:
                out.setdefault(arm, {})[f"{b:g}"] = summarise(values)
    return out


def cell(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return f"{s['mean']:.2f} (1 seed)"
    return f"{s['mean']:.2f} ± {s['sd']:.2f} [{s['min']:.2f}-{s['max']:.2f}]"


def verdict(summary: dict[str, dict[str, dict[str, float]]], floor: float, recipe: str) -> list[str]:
    """The issue's targets, each as a line that says MET, MISSED or TIE with the figures it rests on."""
    lines = []
    plain, best = summary.get("plain", {}), summary.get(recipe, {})
    if not plain or not best or "10" not in plain or "10" not in best or "5" not in best:
        return ["the target check needs the plain arm, the recipe and budgets 5 and 10"]

    def compare(a: dict[str, float], b: dict[str, float]) -> str:
        spread = max(x for x in (a["sd"], b["sd"], 0.0) if x == x)  # nan-free
        if abs(a["mean"] - b["mean"]) < spread:
            return "TIE (difference inside the spread)"
        return "MET" if a["mean"] < b["mean"] else "MISSED"

    target = 3 * floor
    lines.append(
        f"{recipe} at 10 min: mean {best['10']['mean']:.2f} vs 3x the real-data floor {target:.2f}: "
        + ("MET" if best["10"]["mean"] <= target else f"MISSED by {best['10']['mean'] / target:.2f}x")
    )
    lines.append(
        f"{recipe} at 5 min, worst seed {best['5']['max']:.2f} vs plain at 10 min, mean {plain['10']['mean']:.2f}: "
        + ("MET" if best["5"]["max"] < plain["10"]["mean"] else "MISSED")
    )
    for b in sorted(best, key=float):
        if b in plain:
            worst = "MET" if best[b]["max"] < plain[b]["max"] else "MISSED"
            lines.append(
                f"{recipe} vs plain at {b} min: mean {best[b]['mean']:.2f} vs {plain[b]['mean']:.2f}: "
                f"{compare(best[b], plain[b])}; worst seed {best[b]['max']:.2f} vs {plain[b]['max']:.2f}: {worst}"
            )
    defaults = summary.get("defaults", {}).get("10")
    if defaults:
        lines.append(
            f"data=mnist defaults at 10 min {defaults['mean']:.2f} ({defaults['n']} seed) vs plain's mean "
            f"{plain['10']['mean']:.2f}: " + ("MET" if defaults["mean"] < plain["10"]["mean"] else "MISSED")
        )
    return lines


def plot(summary: dict[str, dict[str, dict[str, float]]], floor: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for arm, rows in summary.items():
        xs = sorted(rows, key=float)
        means = [rows[b]["mean"] for b in xs]
        line = ax.plot([float(b) for b in xs], means, marker="o", label=f"{arm} ({rows[xs[0]]['n']} seeds)")[0]
        if rows[xs[0]]["n"] > 1:
            lo, hi = [rows[b]["min"] for b in xs], [rows[b]["max"] for b in xs]
            ax.fill_between([float(b) for b in xs], lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(floor, color="k", ls=":", label=f"real data ({floor:.2f})")
    ax.axhline(3 * floor, color="k", ls="--", lw=0.8, label="3x real data")
    ax.set(xlabel="wall time of the run (min)", ylabel="hfid10k_test (lower is better)", yscale="log", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DCGAN_DATA_DIR", "../shared/data")))
    parser.add_argument("--budgets", default="2.5,5,10", help="minutes of each run's wall clock, comma list")
    parser.add_argument("--arms", default="plain:3,mnist_fast:3,defaults:1", help="name:seeds, comma list")
    parser.add_argument("--recipe", default="mnist_fast", help="the arm the targets are checked for")
    parser.add_argument("--samples", type=int, default=10000, help="generated images per score")
    parser.add_argument("--seed", type=int, default=0, help="the first seed; arms use seed, seed+1, ...")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/time_to_quality"))
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("DCGAN_CACHE_DIR", "~/.cache/dcgan")))
    parser.add_argument("--classifier-steps", type=int, default=800, help="the training-time classifier's (as shipped)")
    parser.add_argument("--heldout-steps", type=int, default=1500, help="the held-out scorer's training steps")
    parser.add_argument("--score-only", action="store_true", help="score the snapshots already in --out")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    budgets = sorted(float(b) for b in args.budgets.split(",") if b)
    args.out = args.out.resolve()
    args.data_dir = args.data_dir.resolve()
    args.cache_dir = args.cache_dir.expanduser().resolve()
    if args.worker == "plain":
        plain_run(args.data_dir, budgets, args.out, args.name, args.seed, 64)
        return 0
    if not (args.data_dir / "MNIST" / "raw").is_dir():
        parser.error(f"--data-dir {args.data_dir}: no MNIST/raw/ there. Point it at the folder that holds MNIST/.")
    arms: list[tuple[str, int]] = []
    for item in filter(None, args.arms.split(",")):
        arm, _, count = item.partition(":")
        arms.append((arm, int(count or 1)))
    runs = [(arm, args.seed + i) for i in range(max(c for _, c in arms)) for arm, c in arms if i < c]
    args.out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    machine = f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs"
    print(f"{machine}; MNIST 32x32; budgets {budgets} min; runs {runs}", flush=True)
    walls = {}
    if not args.score_only:
        for arm, seed in runs:
            walls[f"{arm}@{seed}"] = launch(arm, seed, args, budgets)
            print(f"{arm}@{seed} done ({walls[f'{arm}@{seed}']:.0f} s)", flush=True)
    scores = score_all(args, runs, budgets)
    scores["walls"], scores["machine"] = walls, machine
    (args.out / "results.json").write_text(json.dumps(scores, indent=1))

    hfid = next(p for p in scores["protocols"] if p.startswith("hfid"))
    cfid = next(p for p in scores["protocols"] if p.startswith("cfid"))
    floor = scores["floor"][hfid]
    for metric in (hfid, cfid):
        summary = table(scores, metric, budgets)
        print(f"\n{metric} by wall time of the run: mean ± sd [min-max] over seeds (lower is better); "
              f"real-data floor {scores['floor'][metric]:.2f}")  # fmt: skip
        print("| arm | " + " | ".join(f"{b:g} min" for b in budgets) + " |")
        print("|---|" + "---|" * len(budgets))
        for arm, rows in summary.items():
            print(f"| {arm} | " + " | ".join(cell(rows.get(f"{b:g}")) for b in budgets) + " |")
    summary = table(scores, hfid, budgets)
    print("\nTargets (held-out scorer):")
    for line in verdict(summary, floor, args.recipe):
        print(f"- {line}")
    plot(summary, floor, args.out / "time_to_quality.png", f"MNIST 32x32, {machine.split(', ', 1)[1]}")
    print(f"plot: {args.out / 'time_to_quality.png'}; results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
