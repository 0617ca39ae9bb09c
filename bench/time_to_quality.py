"""Time to quality: which recipe gets good MNIST samples fastest on this machine, for equal wall-clock budgets.

Trained one after another in this process, each for the largest budget, with G snapshotted when its
training clock passes each budget (the clock stops while a snapshot is taken; start-up and data decode
are not counted):

* ``plain``: a hand-written PyTorch DCGAN loop in this file with the paper's settings (fp32, batch 64,
  Adam 2e-4 / (0.5, 0.999), BCE, the project's networks at 32x32 gray, ngf = ndf = 64);
* ``plain64``: the same loop at 64x64 as pytorch/examples' dcgan runs MNIST (the padded 32x32 digits resized
  to 64 bilinearly, G and D one stride-2 layer deeper); its samples are averaged 2x2 to 32x32 for scoring;
* ``plain+ema``, ``plain64+ema``: the same runs' exponential moving average of G's weights (decay
  ``--ema-decay`` with the project's warm-up, min(decay, (1 + n) / (10 + n)) after n steps), the loop's
  only change (Yazici et al. 2019);
* each ``--recipes`` entry: ``train.py data=mnist experiment=<name>`` through the project's ``train()``,
  with its own defaults (precision, channels_last, EMA, ...) and the end-of-epoch metric switched off
  (scoring happens afterwards, as for the plain loop).

Every snapshot is then scored the same way: the offline classifier FID ("cFID", lower is better) and
class coverage of ``--samples`` generated images against the training set, with the project's metric
classifier (issue 4). The table is recipe x budget; ``time_to_quality.png`` plots cFID against wall time.

Run from the repository root (MNIST in torchvision's layout under the data dir)::

    .venv/bin/python bench/time_to_quality.py                                  # 2.5, 5, 10, 20 min: ~1.5 h
    .venv/bin/python bench/time_to_quality.py --budgets 0.5,1 --recipes mnist_fast --samples 2000   # smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from dcgan.cli import CONF_DIR, train
from dcgan.data.mnist import MNISTDataModule
from dcgan.losses import d_loss_bce, g_loss_nonsaturating
from dcgan.metrics.callback import QualityMetrics
from dcgan.nets import Discriminator, Generator


class Clock:
    """Training seconds since ``start``, not counting the time spent in ``paused()``."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.excluded = 0.0

    def seconds(self) -> float:
        return time.perf_counter() - self.t0 - self.excluded

    def pause_for(self, fn: Any, *args: Any) -> None:
        start = time.perf_counter()
        fn(*args)
        self.excluded += time.perf_counter() - start


def plain_loop(
    name: str, images: torch.Tensor, budgets: list[float], out: Path, ema_decay: float, seed: int, batch_size: int
) -> None:
    """The paper's loop, fp32, at the images' size; saves G and its EMA as ``<name>[+ema]_<budget>.pt``."""
    L.seed_everything(seed, verbose=False)
    size = images.size(-1)
    gen, disc = Generator(100, 64, size, 1), Discriminator(64, size, 1)
    ema = copy.deepcopy(gen).requires_grad_(False)
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    pending, clock, steps = list(budgets), Clock(), 0

    def snapshot(budget: float) -> None:
        torch.save(gen, out / f"{name}_{budget:g}.pt")
        torch.save(ema, out / f"{name}+ema_{budget:g}.pt")

    while pending:
        for idx in torch.randperm(len(images)).split(batch_size):
            if len(idx) < batch_size:
                continue
            real = images[idx].float().div_(127.5).sub_(1.0)
            fake = gen(torch.randn(batch_size, 100))
            loss_d = d_loss_bce(disc(real), disc(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            disc.requires_grad_(False)
            loss_g = g_loss_nonsaturating(disc(fake))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            disc.requires_grad_(True)
            steps += 1
            decay = min(ema_decay, (1 + steps) / (10 + steps))  # the same warm-up as the project's EMA
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(gen.parameters()), 1.0 - decay)
                for e, b in zip(ema.buffers(), gen.buffers(), strict=True):
                    e.copy_(b)
            while pending and clock.seconds() >= pending[0] * 60:
                clock.pause_for(snapshot, pending.pop(0))
            if not pending:
                return


class Snapshots(L.Callback):
    """Saves the generator ``sample`` uses (EMA when on) as training time passes each budget, then stops."""

    def __init__(self, budgets: list[float], out: str, name: str) -> None:
        self.pending, self.out, self.name = list(budgets), Path(out), name
        self.clock: Clock | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.clock = Clock()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        assert self.clock is not None
        while self.pending and self.clock.seconds() >= self.pending[0] * 60:
            self.clock.pause_for(self._save, pl_module, self.pending.pop(0))
        if not self.pending:
            trainer.should_stop = True

    def _save(self, pl_module: Any, budget: float) -> None:
        net = pl_module.generator_ema if pl_module.generator_ema is not None else pl_module.generator
        net = getattr(net, "_orig_mod", net)  # torch.compile'd
        torch.save(copy.deepcopy(net).float().cpu(), self.out / f"{self.name}_{budget:g}.pt")


def recipe_run(name: str, data_dir: Path, budgets: list[float], out: Path, cache_dir: Path, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dcgan-ttq-") as tmp:
        overrides = [
            "data=mnist",
            f"experiment={name}",
            f"data.data_dir={data_dir}",
            f"paths.output_dir={tmp}",
            f"paths.cache_dir={cache_dir}",
            f"seed={seed}",
            "trainer.max_epochs=1000",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "~callbacks.progress_bar",
            "~callbacks.quality",
            f"+callbacks.snapshots._target_={__name__}.Snapshots",
            f"+callbacks.snapshots.budgets=[{','.join(map(str, budgets))}]",
            f"+callbacks.snapshots.out={out}",
            f"+callbacks.snapshots.name={name}",
        ]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        with open_dict(cfg):
            cfg.pop("hydra", None)
        train(cfg)


def fake_batches(gen: Generator, n: int, batch: int, seed: int) -> Iterator[Any]:
    """``n`` samples at 32x32 (a 64px G's averaged 2x2); a conditional G's come with their labels, classes in turn."""
    gen.eval()
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), gen.nz, generator=rng)
            labels = torch.arange(start, start + len(z)) % gen.num_classes if gen.num_classes else None
            images = gen(z, labels).float()
            if images.size(-1) != 32:
                images = F.adaptive_avg_pool2d(images, 32)
            yield images if labels is None else (images, labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DCGAN_DATA_DIR", "../shared/data")))
    parser.add_argument("--budgets", default="2.5,5,10,20", help="wall-clock minutes, comma list")
    parser.add_argument("--baselines", default="plain,plain64", help="hand-written loops: plain (32px), plain64")
    parser.add_argument(
        "--recipes", default="mnist_fast,mnist_fast_conditional", help="experiment configs, comma list ('' for none)"
    )
    parser.add_argument("--samples", type=int, default=5000, help="generated images per score")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--batch-size", type=int, default=64, help="the plain loop's batch (pytorch/examples' default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier-steps", type=int, default=1000, help="the metric classifier's (as in training)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/time_to_quality"))
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("DCGAN_CACHE_DIR", "~/.cache/dcgan")))
    args = parser.parse_args(argv)
    budgets = sorted(float(b) for b in args.budgets.split(",") if b)
    recipes = [r for r in args.recipes.split(",") if r]
    baselines = [b for b in args.baselines.split(",") if b]
    if unknown := set(baselines) - {"plain", "plain64"}:
        parser.error(f"--baselines {','.join(sorted(unknown))}: expected plain and/or plain64.")
    if not (args.data_dir / "MNIST" / "raw").is_dir():
        parser.error(f"--data-dir {args.data_dir}: no MNIST/raw/ there. Point it at the folder that holds MNIST/.")
    args.out.mkdir(parents=True, exist_ok=True)
    cache_dir = args.cache_dir.expanduser()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    dm = MNISTDataModule(str(args.data_dir), cache_dir=str(cache_dir))
    dm.prepare_data()
    dm.setup("fit")
    print(
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; MNIST 32x32; "
        f"budgets {budgets} min; {args.samples} samples per score",
        flush=True,
    )
    for name in baselines:
        start = time.perf_counter()
        images = dm.images if name == "plain" else upsample(dm.images, 64)
        plain_loop(name, images, budgets, args.out, args.ema_decay, args.seed, args.batch_size)
        print(f"{name} loop done ({time.perf_counter() - start:.0f} s)", flush=True)
    for name in recipes:
        start = time.perf_counter()
        recipe_run(name, args.data_dir, budgets, args.out, cache_dir, args.seed)
        print(f"recipe {name} done ({time.perf_counter() - start:.0f} s)", flush=True)

    metrics = QualityMetrics(
        num_samples=args.samples,
        batch_size=500,
        cache_dir=str(cache_dir),
        seed=args.seed,
        classifier="on",
        classifier_steps=args.classifier_steps,
    )
    suite = metrics.build_suite(dm, torch.device("cpu"))
    assert suite is not None
    names = [*(n for b in baselines for n in (b, f"{b}+ema")), *recipes]
    table: dict[str, dict[float, dict[str, float]]] = {name: {} for name in names}
    for name in names:
        for budget in budgets:
            path = args.out / f"{name}_{budget:g}.pt"
            if path.is_file():
                gen = torch.load(path, map_location="cpu", weights_only=False)  # a module this bench saved
                table[name][budget] = suite.score(fake_batches(gen, args.samples, 500, args.seed + 1))
    (args.out / "results.json").write_text(json.dumps({n: {str(b): v for b, v in r.items()} for n, r in table.items()}))

    width = max(map(len, names))
    print(f"\ncFID (class coverage) by training wall time; {args.samples} samples, lower cFID is better")
    print(f"{'recipe':<{width}}  " + "  ".join(f"{b:>14g} min" for b in budgets))
    for name in names:
        cells = [
            f"{r['val/cfid']:8.2f} ({r['val/class_coverage']:.3f})" if (r := table[name].get(b)) else f"{'-':>18}"
            for b in budgets
        ]
        print(f"{name:<{width}}  " + "  ".join(cells))
    for name in names:
        if any("val/class_acc" in r for r in table[name].values()):
            accs = ", ".join(f"{r['val/class_acc']:.3f} at {b:g} min" for b, r in table[name].items())
            print(f"{name}: val/class_acc (the classifier sees the class asked for) {accs}")
    verdict(table, budgets, recipes)
    plot(table, budgets, args.out / "time_to_quality.png")
    print(f"plot: {args.out / 'time_to_quality.png'}")
    return 0


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 1, 32, 32) -> uint8 (N, 1, size, size), bilinear, in chunks to bound memory."""
    return torch.cat(
        [
            F.interpolate(chunk.float(), size=size, mode="bilinear", align_corners=False).round().clamp(0, 255).byte()
            for chunk in images.split(4096)
        ]
    )


def verdict(
    table: dict[str, dict[float, dict[str, float]]], budgets: list[float], recipes: list[str]
) -> dict[str, bool]:
    """The target, per recipe: at 5 min a cFID <= half the plain loop's at 20 min and a class coverage >= 0.98,
    and a lower cFID than plain+ema at every budget. Empty when the table cannot tell."""
    if 5.0 not in budgets or 20.0 not in budgets or not recipes or "plain+ema" not in table:
        print("the target check needs budgets 5 and 20, the plain baseline and at least one recipe")
        return {}
    met = {}
    plain20 = table["plain"][20.0]["val/cfid"]
    for name in recipes:
        at5 = table[name].get(5.0, {}).get("val/cfid", float("inf"))
        beats = all(
            table[name].get(b, {}).get("val/cfid", float("inf")) < table["plain+ema"][b]["val/cfid"] for b in budgets
        )
        coverage = table[name].get(5.0, {}).get("val/class_coverage", 0.0)
        ok = met[name] = at5 <= plain20 / 2 and beats and coverage >= 0.98
        print(
            f"{name}: cFID at 5 min {at5:.2f} vs plain at 20 min {plain20:.2f} (target <= {plain20 / 2:.2f}); "
            f"beats plain+ema at every budget: {beats}; coverage at 5 min {coverage:.3f}: "
            f"{'MEETS' if ok else 'MISSES'} the target"
        )
    return met


def plot(table: dict[str, dict[float, dict[str, float]]], budgets: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in table.items():
        xs = [b for b in budgets if b in rows]
        ax.plot(xs, [rows[b]["val/cfid"] for b in xs], marker="o", label=name)
    ax.set(xlabel="training wall time (min)", ylabel="classifier FID (lower is better)", yscale="log")
    ax.set_title(f"MNIST 32x32 on {os.cpu_count()} CPU cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
