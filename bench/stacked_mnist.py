"""Stacked MNIST (1,000 modes) at a fixed training budget per run, beside the published DCGAN-family rows.

Each run is ``train.py data=stacked_mnist <arm> seed=S trainer.max_time=<budget>`` in its own process (its wall
clock from launch to exit, first-use costs such as the monitor's classifier included), then
``evaluate.py num_samples=26000`` on its ``last.ckpt``: ``modes26k`` and ``kl26k`` (PacGAN's protocol: 26,000
samples, each channel read by the held-out digit scorer, trained on MNIST's test digits only) and precision,
recall, density and coverage on the same scorer's features against 26,000 test stacks. A finished run keeps its
``result.json`` and is skipped when the bench is invoked again, so the table can fill over several sessions.
Run from the repository root, alone on the machine::

    .venv/bin/python bench/stacked_mnist.py --data-dir ../shared/data             # up to --max-minutes 90
    .venv/bin/python bench/stacked_mnist.py --arms dcgan:1,dcgan_d1/4:1 --minutes 2  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a checkout without the editable install
from dcgan.metrics.protocols import count_label  # noqa: E402

PAC = "model/discriminator=pacgan"
MANIFOLD = ("precision", "recall", "density", "coverage")
# arm -> (what it is, overrides of train.py). D at 1/4 or 1/2 of G's width: the Unrolled GAN setting (ngf 64).
ARMS: dict[str, tuple[str, list[str]]] = {
    "dcgan": ("the paper's DCGAN (ngf = ndf = 64)", []),
    "dcgan_d1/4": ("D at 1/4 of G's width (ndf 16)", ["model.discriminator.ndf=16"]),
    "dcgan_d1/2": ("D at 1/2 of G's width (ndf 32)", ["model.discriminator.ndf=32"]),
    "pacdcgan2": ("PacDCGAN2", [PAC, "model.discriminator.packing=2"]),
    "pacdcgan3": (
        "PacDCGAN3 (batch 63: a multiple of 3)",
        [PAC, "model.discriminator.packing=3", "data.batch_size=63"],
    ),
    "pacdcgan4": ("PacDCGAN4", [PAC, "model.discriminator.packing=4"]),
    "pacdcgan4_d1/4": (
        "PacDCGAN4, D at 1/4 (ndf 16)",
        [PAC, "model.discriminator.packing=4", "model.discriminator.inner.ndf=16"],
    ),
    "recipe": ("experiment=stacked_mnist_fast", ["experiment=stacked_mnist_fast"]),
}
# arm:seeds; the arms a claim rests on (collapse at D = 1/4, packing's cure of it, the recipe) run 3 seeds
DEFAULT_ARMS = "dcgan:3,dcgan_d1/4:3,pacdcgan4_d1/4:3,recipe:3,dcgan_d1/2:1,pacdcgan2:1,pacdcgan3:1,pacdcgan4:1"
# The published rows (issue 23's table): source, model, modes, KL, and their training length.
PUBLISHED = [
    ("VEEGAN Table 2", "DCGAN", "99", "3.4", "50 epochs of 128k, batch 64 (100k batches)"),
    ("VEEGAN Table 2", "VEEGAN", "150", "2.95", "same"),
    ("PacGAN Table 2 (10 trials)", "DCGAN", "78.9 +- 6.46", "4.50 +- 0.127", "same setting as VEEGAN"),
    ("PacGAN Table 2", "PacDCGAN2 / 3 / 4", "1000 / 1000 / 1000", "0.06 / 0.06 / 0.07", "same"),
    ("PacGAN Table 3, D = 1/4 G (50 trials)", "DCGAN / PacDCGAN4", "78.5 +- 17.56 / 667.4 +- 29.0", "5.21 / 1.81",
     "the Unrolled GAN setting"),
    ("PacGAN Table 3, D = 1/2 G", "DCGAN / PacDCGAN3", "487.7 +- 34.59 / 866.6 +- 12.1", "2.24 / 0.90", "same"),
    ("Unrolled GAN, D = 1/4 / 1/2 G", "10 unrolling steps", "327.2 / 817.4", "4.66 / 1.43", "same"),
]  # fmt: skip


def parse_arms(text: str) -> list[tuple[str, int]]:
    arms = []
    for item in text.split(","):
        name, _, seeds = item.partition(":")
        if name not in ARMS:
            raise SystemExit(f"--arms: unknown arm {name!r}; expected one of {', '.join(ARMS)}")
        arms.append((name, int(seeds or 1)))
    return arms


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / f"{arm.replace('/', '-')}-s{seed}"


def python(args: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run ``python <args>`` from the repository root, its output into ``log``; the wall seconds it took."""
    start = time.time()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.time() - start
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} ... failed ({proc.returncode}); its log: {log}")
    return seconds


def evaluate(target: str, where: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The protocols on a checkpoint (``ckpt_path=``) or images (``images=``), with the shared held-out scorer."""
    cmd = ["evaluate.py", target, "data=stacked_mnist", f"data.data_dir={args.data_dir}", *args.data]
    cmd += [f"num_samples={args.samples}"]
    cmd += ["quality.classifier=off", "quality.inception=off", "quality.heldout=on", "probe.enabled=false"]
    cmd += [f"quality.heldout_steps={args.heldout_steps}", f"paths.cache_dir={args.out / 'scorer-cache'}"]
    cmd += [f"hydra.run.dir={where}"]
    python(cmd, where.parent / f"{where.name}.log")
    return json.loads((where / "evaluation.json").read_text())  # "quality", "histogram_modes26k", ...


def run(arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one arm for one seed (a fresh cache: first-use costs count), score it, save ``result.json``."""
    folder = run_dir(args.out, arm, seed)
    minutes = args.recipe_minutes if arm == "recipe" else args.minutes
    seconds = round(minutes * 60)
    cmd = ["train.py", "data=stacked_mnist", f"data.data_dir={args.data_dir}", *args.data, f"seed={seed}"]
    cmd += ARMS[arm][1]
    cmd += [f"trainer.max_time=00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"]
    cmd += ["trainer.max_epochs=-1", f"hydra.run.dir={folder / 'train'}", f"paths.cache_dir={folder / 'cache'}"]
    cmd += ["trainer.enable_progress_bar=false", "~callbacks.progress_bar", *args.extra]
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    wall = python(cmd, folder / "train.log", env)
    ckpt = folder / "train" / "checkpoints" / "last.ckpt"
    steps = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    report = evaluate(f"ckpt_path={ckpt}", folder / "eval", args)
    quality = report["quality"]
    grids = sorted((folder / "train" / "samples").glob("fixed_noise_step*.png"))
    if grids:  # the last fixed-noise grid and the mode histogram stay beside result.json (the rest is git-ignored)
        shutil.copy(grids[-1], folder / "grid.png")
    shutil.copy(report[f"histogram_modes{args.n}"], folder / "modes.png")
    result = {"arm": arm, "seed": seed, "minutes": minutes, "wall_s": wall, "global_step": steps, "quality": quality}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    return result


def real_floor(args: argparse.Namespace) -> dict[str, float]:
    """Real training stacks scored as the samples are: ``--samples`` of them (26,000), drawn with a fixed seed."""
    path = args.out / "real_floor.json"
    if path.is_file():
        return json.loads(path.read_text())
    from dcgan.data import StackedMNISTDataModule

    settings = {k.removeprefix("data."): yaml.safe_load(v) for k, _, v in (a.partition("=") for a in args.data)}
    dm = StackedMNISTDataModule(str(args.data_dir), **{"seed": 0, **settings})
    dm.prepare_data()
    dm.setup("fit")
    index = torch.randperm(dm.num_images(), generator=torch.Generator().manual_seed(0))[: args.samples]
    images = args.out / "real_stacks.npz"
    np.savez(images, images=dm.images_at(index).permute(0, 2, 3, 1).numpy())
    quality = evaluate(f"images={images}", args.out / "real-eval", args)["quality"]
    images.unlink()
    path.write_text(json.dumps(quality, indent=1))
    return quality


def spread(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} +- {statistics.stdev(values):.{digits}f} ({len(values)} seeds)"


def table(results: list[dict[str, Any]], floor: dict[str, float] | None, args: argparse.Namespace) -> str:
    lines = [
        f"bench/stacked_mnist.py on {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        f"training budget per run: {args.minutes:g} min (recipe {args.recipe_minutes:g} min) of trainer.max_time; "
        "wall = the whole train.py process, start-up and the monitor's first-use classifier included",
        f"scores: {args.samples} samples (EMA of G where the arm has one), held-out digit scorer per channel "
        "(trained on MNIST's test digits); precision/recall (k=3), density/coverage (k=5) vs test stacks",
        "",
        "| source, setting | model | modes (of 1,000) | KL | training |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {s} | {m} | {modes} | {kl} | {t} |" for s, m, modes, kl, t in PUBLISHED]
    for arm, what in ((a, ARMS[a][0]) for a in ARMS):
        mine = [r for r in results if r["arm"] == arm]
        if not mine:
            continue
        q = [r["quality"] for r in mine]
        batches = statistics.fmean(r["global_step"] / 2 for r in mine)  # 2 optimizer steps per batch
        wall = statistics.fmean(r["wall_s"] for r in mine) / 60
        modes, kl = spread([x[f"modes{args.n}"] for x in q], 1), spread([x[f"kl{args.n}"] for x in q], 3)
        lines.append(
            f"| this framework, {mine[0]['minutes']:g} min | {arm}: {what} | {modes} | {kl} "
            f"| {batches:,.0f} batches, {wall:.1f} min wall |"
        )
    if floor:
        modes, kl = floor[f"modes{args.n}"], floor[f"kl{args.n}"]
        lines.append(f"| real stacks ({args.n}) | the data | {modes:.0f} | {kl:.3f} | - |")
    lines += ["", "| arm | precision | recall | density | coverage |", "|---|---|---|---|---|"]
    for arm in ARMS:
        q = [r["quality"] for r in results if r["arm"] == arm]
        if q:
            cells = [
                spread([x[f"h{m}{args.n}_test"] for x in q], 3) for m in ("precision", "recall", "density", "coverage")
            ]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if floor:
        cells = [f"{floor[f'h{m}{args.n}_test']:.3f}" for m in MANIFOLD]
        lines.append("| real stacks | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DCGAN_DATA_DIR", ROOT / "data")))
    parser.add_argument("--arms", default=DEFAULT_ARMS, help=f"arm:seeds,... ({', '.join(ARMS)})")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each non-recipe run")
    parser.add_argument("--recipe-minutes", type=float, default=20.0, help="training budget of each recipe run")
    parser.add_argument("--max-minutes", type=float, default=90.0, help="start no run past this much wall time")
    parser.add_argument("--heldout-steps", type=int, default=1500, help="training steps of the held-out scorer")
    parser.add_argument("--samples", type=int, default=26000, help="generated images scored per run (PacGAN: 26k)")
    parser.add_argument("--data", nargs="*", default=[], help="data.* overrides for training, scoring and the floor")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every train.py run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stacked_mnist")
    args = parser.parse_args(argv)
    args.data_dir, args.out = args.data_dir.resolve(), args.out.resolve()
    args.n = count_label(args.samples)  # the protocols' count: modes26k
    args.out.mkdir(parents=True, exist_ok=True)
    arms = parse_arms(args.arms)
    start = time.time()
    floor = real_floor(args)
    todo = [(arm, s) for s in range(max(n for _, n in arms)) for arm, n in arms if s < n]  # seed 0 of each first
    results = []
    for arm, seed in todo:
        saved = run_dir(args.out, arm, seed) / "result.json"
        if saved.is_file():
            results.append(json.loads(saved.read_text()))
            continue
        minutes = args.recipe_minutes if arm == "recipe" else args.minutes
        if (time.time() - start) / 60 + minutes > args.max_minutes:
            print(f"skipped {arm} seed {seed}: past --max-minutes {args.max_minutes:g}; invoke again to continue")
            continue
        print(f"running {arm} seed {seed} ({minutes:g} min)...", flush=True)
        results.append(run(arm, seed, args))
        print(f"  {results[-1]['quality']}", flush=True)
        (args.out / "table.md").write_text(table(results, floor, args) + "\n")
    text = table(results, floor, args)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
