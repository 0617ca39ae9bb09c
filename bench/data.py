"""Data-loading throughput: the project's DataModules vs torchvision's dataset + DataLoader, same run.

One full epoch per side and data set, interleaved, best of two; what each side includes and the targets:
docs/performance.md, "How the benches measure". Run from the repository root::

    .venv/bin/python bench/data.py                       # every row, about a minute on 2 cores
    .venv/bin/python bench/data.py --only mnist,folder-cache --batch-size 256
    DCGAN_DATA_DIR=/data .venv/bin/python bench/data.py  # or --data-dir /data
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pickle
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from dcgan.data.base import InMemoryDataModule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.formats
from dcgan.data.cifar import CIFAR10DataModule
from dcgan.data.files import ImageFolderDataModule
from dcgan.data.mnist import FashionMNISTDataModule, MNISTDataModule
from tests.formats import write_cifar

REPO = Path(__file__).resolve().parent.parent
ROWS = ("mnist", "fashion-mnist", "cifar10", "folder-uncached", "folder-cache")
ALIASES = {"fashion": ["fashion-mnist"], "cifar": ["cifar10"], "folder": ["folder-uncached", "folder-cache"]}
ROUNDS = 2  # interleaved rounds per row; the best epoch of each side is kept
FAST_TARGET, CACHE_TARGET = 50_000.0, 5_000.0
CIFAR_PER_BATCH = 10_000
HALF = (0.5,)  # Normalize((0.5,), (0.5,)) maps ToTensor's [0, 1] to [-1, 1], like to_unit_range


@dataclass
class Row:
    name: str
    ours: float | None = None
    theirs: float | None = None
    target: float | None = None
    notes: list[str] = field(default_factory=list)


# --- timing ------------------------------------------------------------------------------------
Epoch = Callable[[], tuple[int, float]]


def time_epoch(batches: Callable[[], Iterable[Any]], convert: Callable[[Any], torch.Tensor] | None = None) -> Epoch:
    """A callable that runs one full epoch of ``batches()`` and returns (images, seconds)."""

    def run() -> tuple[int, float]:
        start, n = time.perf_counter(), 0
        for batch in batches():
            images = convert(batch) if convert is not None else batch[0]
            n += images.shape[0]
        return n, time.perf_counter() - start

    return run


def ours_epoch(dm: InMemoryDataModule) -> Epoch:
    """An epoch as the trainer sees it: ``train_dataloader()`` then the on-device conversion."""
    return time_epoch(dm.train_dataloader, lambda batch: dm.on_after_batch_transfer(batch, 0))


def torchvision_epoch(dataset: Dataset, batch_size: int, workers: int) -> Epoch:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    return time_epoch(lambda: loader)  # iter(loader) starts the workers: part of each timed epoch


def best_rates(epochs: list[Epoch], rounds: int = ROUNDS) -> list[float]:
    """Run the epochs interleaved ``rounds`` times; best img/s of each."""
    best = [0.0] * len(epochs)
    for _ in range(rounds):
        for i, epoch in enumerate(epochs):
            n, seconds = epoch()
            best[i] = max(best[i], n / seconds)
    return best


def timed(label: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = fn()
    print(f"  {label}: {time.perf_counter() - start:.2f} s (not timed in the epoch)", flush=True)
    return result


def quiet(fn: Callable[[], Any]) -> Any:
    """Call ``fn`` without torchvision's 'Using downloaded and verified file' chatter."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn()


# --- MNIST / Fashion-MNIST -----------------------------------------------------------------------
def mnist_present(data_dir: Path, folder: str) -> bool:
    raw = data_dir / folder / "raw"
    return any((raw / f"train-images-idx3-ubyte{ext}").is_file() for ext in ("", ".gz"))


def torchvision_mnist(folder: str, data_dir: Path, tmp: Path, transform: T.Compose) -> tuple[Dataset, str | None]:
    """torchvision's MNIST/FashionMNIST; where only the .gz files exist (torchvision wants them unpacked), copy
    them to ``tmp`` and let torchvision verify the md5s and unpack there (no network: the files are present)."""
    cls = getattr(torchvision.datasets, folder)
    try:
        return cls(str(data_dir), train=True, download=False, transform=transform), None
    except RuntimeError:
        shutil.copytree(data_dir / folder / "raw", tmp / folder / "raw")
        dataset = quiet(lambda: cls(str(tmp), train=True, download=True, transform=transform))
        return dataset, f"{folder}: torchvision read a temp copy of raw/*.gz that it md5-checked and unpacked"


def bench_mnist(name: str, cls: type[MNISTDataModule], data_dir: Path, tmp: Path, args: argparse.Namespace) -> Row:
    row = Row(name, target=FAST_TARGET)
    print(f"{name}:", flush=True)
    dm = cls(str(data_dir), image_size=32, batch_size=args.batch_size, cache_dir=str(tmp / "cache"))
    timed("ours prepare_data (decode + write .npy cache)", dm.prepare_data)
    timed("ours setup (load the cache)", dm.setup)
    transform = T.Compose([T.Pad(2), T.ToTensor(), T.Normalize(HALF, HALF)])
    try:
        dataset, note = timed(
            "torchvision dataset constructor", lambda: torchvision_mnist(cls.folder, data_dir, tmp, transform)
        )
    except Exception as err:  # the baseline is optional: report why and keep our number
        dataset, note = None, f"{name}: no torchvision baseline ({type(err).__name__}: {err})"
    if note:
        row.notes.append(note)
    epochs = [ours_epoch(dm)]
    if dataset is not None:
        epochs.append(torchvision_epoch(dataset, args.batch_size, args.workers))
    rates = best_rates(epochs)
    row.ours = rates[0]
    row.theirs = rates[1] if dataset is not None else None
    return row


# --- CIFAR-10 --------------------------------------------------------------------------------------
class UncheckedCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 without its md5 checks (which only the real files pass); loading is unchanged."""

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def bench_cifar(data_dir: Path, tmp: Path, args: argparse.Namespace) -> Row:
    real = (data_dir / "cifar-10-batches-py").is_dir()
    row = Row("CIFAR-10" if real else "CIFAR-10 (synthetic pixels, real format)", target=FAST_TARGET)
    print(f"{row.name}:", flush=True)
    root = data_dir
    if not real:
        root = tmp / "cifar"
        timed(
            "writing 60,000 synthetic images as the 6 python pickles",
            lambda: write_cifar(root, per_batch=CIFAR_PER_BATCH),
        )
        row.notes.append(
            "CIFAR-10 synthetic: random pixels in the real pickle layout (Python 2 str keys, as torchvision reads "
            "them); dcgan with verify_md5=false, torchvision subclassed to skip its md5 checks"
        )
    dm = CIFAR10DataModule(str(root), batch_size=args.batch_size, verify_md5=real, cache_dir=str(tmp / "cache-cifar"))
    timed("ours prepare_data (decode + write .npy cache)", dm.prepare_data)
    timed("ours setup (load the cache)", dm.setup)
    transform = T.Compose([T.ToTensor(), T.Normalize(HALF * 3, HALF * 3)])
    cls = torchvision.datasets.CIFAR10 if real else UncheckedCIFAR10
    dataset = timed(
        "torchvision dataset constructor", lambda: cls(str(root), train=True, download=False, transform=transform)
    )
    row.ours, row.theirs = best_rates([ours_epoch(dm), torchvision_epoch(dataset, args.batch_size, args.workers)])
    return row


# --- image folder ----------------------------------------------------------------------------------
def write_synthetic_folder(root: Path, n: int, seed: int = 0) -> None:
    """``n`` smooth random 178x218 RGB JPEGs (quality 90) in nested subfolders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        path = root / f"group{i % 8}" / f"part{(i // 8) % 4}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (7, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((178, 218), Image.Resampling.BICUBIC).save(path, quality=90)


class FileImages(Dataset):
    """The torchvision-style baseline for a folder without class subfolders: PIL open + transform."""

    def __init__(self, files: list[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB")), 0


def bench_folder(tmp: Path, args: argparse.Namespace, wanted: set[str]) -> list[Row]:
    n, size = args.folder_images, 64
    print(f"image folder ({n} synthetic 178x218 JPEGs -> {size}x{size}):", flush=True)
    root = tmp / "folder"
    timed("writing the synthetic JPEGs", lambda: write_synthetic_folder(root, n))
    common = {"image_size": size, "batch_size": args.batch_size, "num_workers": args.workers}
    rows, epochs = [], []
    if "folder-uncached" in wanted:
        uncached = ImageFolderDataModule(str(root), cache=False, **common)
        timed(
            "ours uncached prepare_data + setup (list files, check headers)",
            lambda: (uncached.prepare_data(), uncached.setup()),
        )
        rows.append(Row(f"folder {size}x{size}, uncached ({args.workers} workers)"))
        epochs.append(ours_epoch(uncached))
    if "folder-cache" in wanted:
        cached = ImageFolderDataModule(str(root), cache=True, cache_dir=str(tmp / "cache-folder"), **common)
        timed(f"ours cache build (prepare_data: decode {n} files with {args.workers} workers)", cached.prepare_data)
        timed("ours setup (memory-map the cache)", cached.setup)
        rows.append(Row(f"folder {size}x{size}, pre-resized cache", target=CACHE_TARGET))
        epochs.append(ours_epoch(cached))
    transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(HALF * 3, HALF * 3)])
    files = sorted(root.rglob("*.jpg"))
    epochs.append(torchvision_epoch(FileImages(files, transform), args.batch_size, args.workers))
    rates = best_rates(epochs)
    for row, rate in zip(rows, rates, strict=False):
        row.ours, row.theirs = rate, rates[-1]
    rows[0].notes.append(
        "folder synthetic: smooth random 178x218 JPEGs (quality 90) in nested folders; torchvision side = a "
        "Dataset over the file list, PIL open + convert RGB + Resize + CenterCrop + ToTensor + Normalize"
    )
    return rows


# --- output ----------------------------------------------------------------------------------------
def fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f}"


def table(rows: list[Row]) -> str:
    header = ["data set", "ours img/s", "torchvision img/s", "ratio", "target", "met?"]
    lines = []
    for r in rows:
        ratio = f"{r.ours / r.theirs:.1f}x" if r.ours and r.theirs else "-"
        target = f">= {r.target:,.0f}" if r.target else "-"
        met = "-" if r.target is None or r.ours is None else ("yes" if r.ours >= r.target else "NO")
        lines.append([r.name, fmt_rate(r.ours), fmt_rate(r.theirs), ratio, target, met])
    widths = [max(len(x) for x in col) for col in zip(header, *lines, strict=True)]

    def render(cells: list[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(header), rule, *(render(cells) for cells in lines)])


def cores() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{usable} usable CPU cores (nproc), {os.cpu_count()} in the machine"


def default_data_dir() -> str:
    if env := os.environ.get("DCGAN_DATA_DIR"):
        return env
    shared = REPO.parent / "shared" / "data"
    return str(shared if shared.is_dir() else Path("data"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        default=default_data_dir(),
        help="folder with MNIST/, FashionMNIST/, cifar-10-batches-py/ "
        "(default: $DCGAN_DATA_DIR, else ../shared/data beside the repository, else ./data)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers: torchvision and uncached folder")
    parser.add_argument("--folder-images", type=int, default=2000, help="size of the synthetic image folder")
    parser.add_argument("--only", help=f"comma list of rows: {', '.join(ROWS)} (or fashion, cifar, folder)")
    args = parser.parse_args(argv)
    wanted: set[str] = set()
    for key in (args.only or ",".join(ROWS)).split(","):
        key = key.strip().lower()
        if key not in ROWS and key not in ALIASES:
            parser.error(f"--only: unknown row {key!r}; expected {', '.join(ROWS)} (or fashion, cifar, folder)")
        wanted.update(ALIASES.get(key, [key]))
    args.wanted = wanted
    if args.folder_images < args.batch_size and wanted & {"folder-uncached", "folder-cache"}:
        parser.error("--folder-images must be at least --batch-size (the last partial batch is dropped)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data_dir).expanduser().resolve()
    started = time.perf_counter()
    print(f"data dir: {data_dir}; batch size {args.batch_size}; {args.workers} workers; {cores()}\n", flush=True)
    rows: list[Row] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dcgan-bench-data-") as tmp_name:
        tmp = Path(tmp_name)
        for key, name, cls in (
            ("mnist", "MNIST", MNISTDataModule),
            ("fashion-mnist", "Fashion-MNIST", FashionMNISTDataModule),
        ):
            if key not in args.wanted:
                continue
            if mnist_present(data_dir, cls.folder):
                rows.append(bench_mnist(name, cls, data_dir, tmp / key, args))
            else:
                skipped.append(f"{name} (no {cls.folder}/raw/train-images-idx3-ubyte[.gz] in {data_dir})")
        if "cifar10" in args.wanted:
            rows.append(bench_cifar(data_dir, tmp, args))
        if args.wanted & {"folder-uncached", "folder-cache"}:
            rows.extend(bench_folder(tmp, args, args.wanted))

    print("\n" + table(rows) + "\n")
    notes = [
        f"machine: {cores()}; {platform.processor() or platform.machine()}; Python {platform.python_version()}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads); "
        f"torchvision {torchvision.__version__}",
        f"each row: {ROUNDS} interleaved rounds (ours, torchvision, ...) of one full epoch, best epoch kept; "
        f"batch {args.batch_size}, drop_last, shuffled; img/s = images yielded / epoch seconds",
        "ours: after prepare_data() + setup() (decode and cache build printed above, not timed); each batch gets "
        "on_after_batch_transfer (uint8 -> float [-1, 1]) on the CPU",
        f"torchvision: DataLoader(num_workers={args.workers}), fresh iterator per epoch, so worker start-up is "
        "inside every timed epoch; ratio = ours / torchvision",
        *(note for row in rows for note in row.notes),
        *(f"skipped: {s}" for s in skipped),
        f"bench wall time: {time.perf_counter() - started:.1f} s",
    ]
    print("\n".join(f"- {note}" for note in notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
