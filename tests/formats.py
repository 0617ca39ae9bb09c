"""Writers for the real on-disk formats (IDX, CIFAR-10 pickles, CelebA, image trees), for tests and bench/."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3 exactly as the official MNIST files: big-endian header, then uint8 pixels, gzipped."""
    n, h, w = images.shape
    payload = struct.pack(">iiii", 2051, n, h, w) + images.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    payload = struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload))


class Py2Str(bytes):
    """Pickled as a Python 2 ``str``, as in the real CIFAR files: it loads as ``str`` under
    ``encoding="latin1"`` (torchvision) and as ``bytes`` under ``encoding="bytes"`` (dcgan)."""


class _Py2Pickler(pickle._Pickler):
    """Pure-Python pickler, protocol 2, that writes :class:`Py2Str` with the BINSTRING opcodes."""

    def save_py2_str(self, obj: Py2Str) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + bytes(obj))

    dispatch = pickle._Pickler.dispatch.copy()
    dispatch[Py2Str] = save_py2_str


def write_py2_pickle(path: Path, obj: Any) -> None:
    with path.open("wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """CIFAR-10's python layout: cifar-10-batches-py/data_batch_{1..5}, test_batch, batches.meta,
    pickled with Python 2 ``str`` keys like the published files (random pixels)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            Py2Str(b"batch_label"): Py2Str(name.encode()),
            Py2Str(b"labels"): rng.integers(0, 10, per_batch).tolist(),
            Py2Str(b"data"): rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            Py2Str(b"filenames"): [Py2Str(f"{name}_{i}.png".encode()) for i in range(per_batch)],
        }
        write_py2_pickle(folder / name, entry)
    labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {Py2Str(b"label_names"): [Py2Str(s.encode()) for s in labels], Py2Str(b"num_vis"): 3072}
    write_py2_pickle(folder / "batches.meta", meta)
    return root


def _smooth_image(rng: np.random.Generator, width: int, height: int, mode: str):
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).convert(mode)


def write_celeba(root: Path, n: int = 30) -> Path:
    """torchvision's CelebA layout: celeba/img_align_celeba/000001.jpg (178x218) and the txt files."""
    base = root / "celeba"
    images = base / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for name in names:
        _smooth_image(rng, 178, 218, "RGB").save(images / name, quality=90)
    split = ["0"] * (n - 10) + ["1"] * 5 + ["2"] * 5
    (base / "list_eval_partition.txt").write_text("".join(f"{m} {s}\n" for m, s in zip(names, split, strict=True)))
    (base / "identity_CelebA.txt").write_text("".join(f"{m} {i}\n" for i, m in enumerate(names)))
    (base / "list_attr_celeba.txt").write_text(f"{n}\n5_o_Clock_Shadow\n" + "".join(f"{m} -1\n" for m in names))
    (base / "list_bbox_celeba.txt").write_text(f"{n}\nimage_id x_1 y_1 width height\n")
    (base / "list_landmarks_align_celeba.txt").write_text(f"{n}\nlefteye_x lefteye_y\n")
    return root


def write_folder(root: Path) -> Path:
    """A nested tree of mixed png/jpg (RGB, gray, RGBA, odd sizes) plus a file that is not an image."""
    rng = np.random.default_rng(0)
    specs = [("a/x.png", 80, 60, "RGB"), ("a/y.JPG", 50, 90, "RGB"), ("b/c/z.jpeg", 64, 64, "L"),
             ("b/w.png", 70, 70, "RGBA"), ("v.bmp", 40, 48, "RGB"), ("u.webp", 66, 66, "RGB")]  # fmt: skip
    for rel, w, h, mode in specs * 3:
        path = root / rel.replace(".", f"{len(list(root.rglob('*')))}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        _smooth_image(rng, w, h, mode).save(path)
    (root / "notes.txt").write_text("not an image")
    return root
