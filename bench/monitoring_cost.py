"""What quality monitoring costs the default ``python train.py``, first use included, and what the classifier keeps.

Two fresh-cache runs of the default config (with and without the monitor), then the metric classifier's recipes;
the method: docs/performance.md, "How the benches measure". Run from the repository root, alone on the machine::

    .venv/bin/python bench/monitoring_cost.py            # about 8 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MONITOR_LINE = re.compile(r"Quality monitoring took ([0-9.]+) s")


def default_run(extra: list[str]) -> tuple[float, float | None, str]:
    """Wall seconds of ``python train.py`` with an empty cache, the monitor's own seconds, and the log."""
    with tempfile.TemporaryDirectory(prefix="dcgan-monitor-") as tmp:
        cmd = [sys.executable, "train.py", f"paths.output_dir={tmp}/run", f"paths.cache_dir={tmp}/cache", *extra]
        cmd += ["trainer.enable_progress_bar=false", "~callbacks.progress_bar"]
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
        )
        wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    found = MONITOR_LINE.search(proc.stdout + proc.stderr)
    return wall, float(found.group(1)) if found else None, proc.stdout + proc.stderr


def classifier_rows(data_dir: Path | None) -> list[tuple[str, str, float, float]]:
    from dcgan.data import DigitsDataModule, MNISTDataModule
    from dcgan.metrics.classifier import train_classifier

    sets = []
    digits = DigitsDataModule(image_size=32, channels=1)
    digits.setup()
    sets.append(("digits", digits.images, digits.load_labels()))
    if data_dir is not None and (data_dir / "MNIST" / "raw").is_dir():
        mnist = MNISTDataModule(str(data_dir))
        mnist.setup()
        sets.append(("MNIST", mnist.images, mnist.load_labels()))
    recipes = {
        "shipped: 800 x 64, one-cycle to 2e-3": {"steps": 800},
        "previous: 1000 x 128, constant 1e-3": {"steps": 1000, "batch_size": 128, "lr": 1e-3, "schedule": "constant"},
    }
    rows = []
    for name, images, labels in sets:
        for recipe, kwargs in recipes.items():
            start = time.perf_counter()
            _, accuracy = train_classifier(images, labels, 10, **kwargs)
            rows.append((name, recipe, time.perf_counter() - start, accuracy))
            print(f"{name:6}  {recipe:38}  {rows[-1][2]:5.1f} s  hold-out accuracy {accuracy:.4f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DCGAN_DATA_DIR", "../shared/data")))
    parser.add_argument("--overrides", nargs="*", default=[], help="extra train.py overrides for both runs (smoke)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; the default python train.py, empty cache", flush=True)
    with_monitor, monitor, log = default_run(args.overrides)
    without, _, _ = default_run([*args.overrides, "~callbacks.quality", "~callbacks.best"])
    if monitor is None:
        print(log[-2000:])
        raise SystemExit("the run printed no 'Quality monitoring took' line: is callbacks.quality on?")
    print("\n| run | wall (s) | monitor (s) | monitor share |\n|---|---|---|---|")
    print(
        f"| python train.py (as shipped) | {with_monitor:.1f} | {monitor:.1f} | {100 * monitor / with_monitor:.1f}% |"
    )
    print(f"| without the monitor | {without:.1f} | - | - |")
    difference = with_monitor - without
    print(f"difference of the two wall times: {difference:.1f} s ({100 * difference / with_monitor:.1f}%)")
    print("\nThe metric classifier, trained on the training split (accuracy on its 10% hold-out):")
    classifier_rows(args.data_dir.resolve() if args.data_dir else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
