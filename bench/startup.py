"""Start-up of an image-folder run on a large folder: what ``prepare_data`` + ``setup`` cost on every rank, before
the first batch, with and without the per-file header cache, and on the memmap path (``data.cache=true``, the
default on CUDA runs). Run from the repository root::

    .venv/bin/python bench/startup.py                    # 200,000 files, about 10 minutes on 2 cores
    .venv/bin/python bench/startup.py --files 20000 --no-build

The folder is written once (``--root``; kept with ``--keep``): ``--distinct`` 178x218 JPEGs written round-robin,
CelebA's size and layout (one flat folder). Figures are with the files in the page cache (written just before);
a cold first start on a network file system is slower. Each step is a fresh DataModule in this process.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dcgan.data.files import ImageFolderDataModule  # noqa: E402


def write_folder(root: Path, n: int, distinct: int) -> None:
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(distinct):
        small = rng.integers(0, 256, (7, 6, 3), dtype=np.uint8)
        buffer = BytesIO()
        Image.fromarray(small).resize((178, 218), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        blobs.append(buffer.getvalue())
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{i + 1:06d}.jpg").write_bytes(blobs[i % distinct])


def timed(rows: list[tuple[str, float]], label: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    rows.append((label, seconds))
    print(f"  {label}: {seconds:.2f} s", flush=True)
    return result


def start(root: Path, cache_dir: Path, cache: bool, workers: int) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(str(root), image_size=64, cache=cache, cache_dir=str(cache_dir), num_workers=workers)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--distinct", type=int, default=64, help="distinct JPEGs, written round-robin")
    parser.add_argument("--root", type=Path, help="the folder to write (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the folder and caches")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the cache build")
    parser.add_argument("--no-build", action="store_true", help="skip the memmap build and its start")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dcgan-startup-"))
    root = args.root or tmp / "images"
    cache_dir = tmp / "cache"
    rows: list[tuple[str, float]] = []
    try:
        print(f"{args.files:,} files in {root}:", flush=True)
        if not (root.is_dir() and sum(1 for _ in root.iterdir()) == args.files):
            timed(rows, "writing the folder", lambda: write_folder(root, args.files, args.distinct))
        timed(rows, "first start, worker path (list, open every header, save the header cache)",
              lambda: start(root, cache_dir, False, args.workers))  # fmt: skip
        timed(rows, "next start, worker path (list, stat every file against the header cache)",
              lambda: start(root, cache_dir, False, args.workers))  # fmt: skip
        if not args.no_build:
            built = timed(rows, f"memmap build, once per folder (decode every file, {args.workers} workers)",
                          lambda: start(root, cache_dir, True, args.workers))  # fmt: skip
            timed(rows, "next start, memmap path (list, stat every file for the cache key, map the cache)",
                  lambda: start(root, cache_dir, True, args.workers))  # fmt: skip
            print(f"  memmap: {built.num_images():,} images, {built.cache_path().stat().st_size / 2**30:.2f} GiB")
        print(f"\n| step ({args.files:,} files, warm page cache) | seconds |\n|---|---|")
        for label, seconds in rows:
            print(f"| {label} | {seconds:.2f} |")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
