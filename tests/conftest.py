"""Shared fixtures: composed configs, tiny data sets in their real on-disk formats, short Trainer runs."""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from dcgan.cli import CONF_DIR
from dcgan.data import InMemoryDataModule

# Shrinks a run to seconds on 2 CPU cores while keeping the real code paths.
TINY = [
    "data.image_size=16",
    "data.batch_size=32",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "model.num_fixed_samples=16",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/train.yaml like ``python train.py`` would, with the run dir inside tmp_path."""

    def _make(overrides: Sequence[str] = (), run_dir: Path | None = None) -> DictConfig:
        run_dir = run_dir or tmp_path / "run"
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            base = [f"paths.output_dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
            cfg = compose("train", overrides=[*base, *overrides])
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg

    return _make


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3 exactly as the official MNIST files: big-endian header, then uint8 pixels, gzipped."""
    n, h, w = images.shape
    payload = struct.pack(">iiii", 2051, n, h, w) + images.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    payload = struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload))


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A 256-image MNIST train split (random strokes) in torchvision's layout: <root>/MNIST/raw/*.gz."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "mnist_data" / "MNIST" / "raw"
    write_idx_images(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (256, 28, 28)))
    write_idx_labels(raw / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 256))
    return tmp_path / "mnist_data"


@pytest.fixture
def real_data_dir() -> Path:
    """The shared real data sets (DCGAN_DATA_DIR, set by .ci/run); skips where absent."""
    value = os.environ.get("DCGAN_DATA_DIR")
    if not value or not (Path(value) / "MNIST" / "raw").is_dir():
        pytest.skip("real data not available: set DCGAN_DATA_DIR to a folder holding MNIST/raw/")
    return Path(value)


class TensorDataModule(InMemoryDataModule):
    """Serves a given uint8 tensor through the project's loader."""

    name = "tensor"

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0) -> None:
        super().__init__(image_size=images.shape[-1], channels=images.shape[1], batch_size=batch_size, seed=seed)
        self._given = images

    def load_images(self) -> torch.Tensor:
        return self._given


def fit(module: L.LightningModule, datamodule: L.LightningDataModule, max_steps: int, **kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer


def write_cifar(root: Path, per_batch: int = 20) -> Path:
    """CIFAR-10's python layout: cifar-10-batches-py/data_batch_{1..5}, test_batch, batches.meta (pickles)."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        with (folder / name).open("wb") as f:
            pickle.dump(entry, f, protocol=2)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [b"airplane"] * 10, b"num_vis": 3072}, f, protocol=2)
    return root


def _smooth_image(rng: np.random.Generator, width: int, height: int, mode: str):
    from PIL import Image

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
