"""End-to-end MNIST training speed: ``train.py`` (DataModule + Lightning) vs a pytorch/examples-style loop.

The examples side is bench/plain_loop.py fed by torchvision + PIL + ``DataLoader``; both train the same 32x32
gray DCGAN on the real MNIST, interleaved in one process. What each side is: docs/performance.md, "How the
benches measure". Run from the repository root (MNIST in torchvision's layout under the data dir)::

    .venv/bin/python bench/end_to_end.py                           # about 4 min on 2 CPU cores
    .venv/bin/python bench/end_to_end.py --data-dir ../shared/data --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import lightning as L
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch.utils.data import DataLoader
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for bench.*
from bench.harness import NetConfig, WindowTimer
from bench.plain_loop import PlainGAN, timed_steps
from dcgan.platform.configs import CONF_DIR
from dcgan.tasks.train import train


def run_train_py(data_dir: Path, overrides: list[str], warmup: int, steps: int, seed: int) -> float:
    with tempfile.TemporaryDirectory(prefix="dcgan-e2e-") as tmp:
        out = Path(tmp) / "window.json"
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    "data=mnist",
                    f"data.data_dir={data_dir}",
                    f"paths.output_dir={tmp}/run",
                    f"paths.cache_dir={tmp}/cache",
                    f"seed={seed}",
                    "trainer.max_epochs=1",
                    "trainer.enable_model_summary=false",
                    "~callbacks.quality",  # it runs at the epoch's end, after the window: only bench time
                    "~callbacks.best",  # it monitors the quality metric
                    "+callbacks.window._target_=bench.harness.WindowTimer",
                    f"+callbacks.window.warmup={warmup}",
                    f"+callbacks.window.steps={steps}",
                    f"+callbacks.window.out={out}",
                    "+callbacks.window.stop=true",
                    *overrides,
                ],
            )
        with open_dict(cfg):
            cfg.pop("hydra", None)
        train(cfg)
        if not out.is_file():
            raise RuntimeError("train.py stopped before the timed window ended: lower --warmup/--steps.")
        return steps * cfg.data.batch_size / json.loads(out.read_text())["seconds"]


def run_examples(data_dir: Path, workers: int, batch_size: int, warmup: int, steps: int, seed: int) -> float:
    L.seed_everything(seed, verbose=False)
    dataset = torchvision.datasets.MNIST(
        str(data_dir),
        train=True,
        download=False,
        transform=T.Compose([T.Resize(32), T.ToTensor(), T.Normalize((0.5,), (0.5,))]),
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    gan = PlainGAN(NetConfig(image_size=32, channels=1))
    timer = timed_steps(gan, (real for real, _ in loader), WindowTimer(warmup, steps))
    return timer.rate(batch_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DCGAN_DATA_DIR", "../shared/data")))
    parser.add_argument("--steps", type=int, default=60, help="timed batches per run")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (median)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the examples side")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    raw = args.data_dir / "MNIST" / "raw"
    if not raw.is_dir():
        parser.error(f"--data-dir {args.data_dir}: no {raw}. Point it at the folder that holds MNIST/raw/.")
    if args.warmup + args.steps >= 60000 // 128:
        parser.error("--warmup + --steps must fit in one MNIST epoch (468 batches of 128).")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("dcgan").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    sides = {
        "examples-style loop (torchvision + PIL + DataLoader), fp32": lambda: run_examples(
            args.data_dir, args.workers, 128, args.warmup, args.steps, args.seed
        ),
        "train.py, fp32, no switches": lambda: run_train_py(
            args.data_dir,
            ["trainer.precision=32-true", "model.channels_last=false"],
            args.warmup,
            args.steps,
            args.seed,
        ),
        "train.py, defaults": lambda: run_train_py(args.data_dir, [], args.warmup, args.steps, args.seed),
    }
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; MNIST 32x32, batch 128, "
        f"warm-up {args.warmup}, {args.steps} timed batches, {args.repeats} rounds",
        flush=True,
    )
    results: dict[str, list[float]] = {name: [] for name in sides}
    for rnd in range(args.repeats):
        for name in sides if rnd % 2 == 0 else reversed(list(sides)):
            results[name].append(sides[name]())
            print(f"  round {rnd + 1}: {name}: {results[name][-1]:.1f} img/s", flush=True)
    base = statistics.median(next(iter(results.values())))
    width = max(map(len, sides))
    print(f"\n{'':<{width}}  img/s (median)  vs examples")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:<{width}}  {med:14.1f}  {med / base:10.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
