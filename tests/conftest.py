"""Shared fixtures: composed configs, tiny data sets in their real on-disk formats, short Trainer runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from dcgan.data import InMemoryDataModule
from dcgan.platform.configs import CONF_DIR
from tests.formats import write_idx_images, write_idx_labels

# Shrinks a run to seconds on 2 CPU cores while keeping the real code paths.
TINY = [
    "data.image_size=16",
    "data.batch_size=32",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "model.num_fixed_samples=16",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "callbacks.quality.num_samples=64",
    "callbacks.quality.batch_size=32",
    "callbacks.quality.classifier_steps=20",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker gpu): none visible to torch")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def train_py(
    args: Sequence[str], tmp_path: Path, check: bool = True, timeout: float = 300, **run: Any
) -> subprocess.CompletedProcess:
    """``python train.py TINY... ARGS`` from the repository root in a new process, the cache in tmp_path; ``run``:
    more arguments of ``subprocess.run``."""
    tiny = [o for o in TINY if not o.startswith("trainer.devices")]
    flags = [a for a in args if a.startswith("-") and not a.startswith("--config")]  # -m first, as argparse wants
    rest = [a for a in args if a not in flags]
    cmd = [sys.executable, "train.py", *flags, *tiny, f"paths.cache_dir={tmp_path / 'cache'}", *rest]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, **run)
    if check:
        assert proc.returncode == 0, (
            f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


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


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A 256-image MNIST train and a 128-image test split (random pixels) in torchvision's layout: <root>/MNIST/raw/."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "mnist_data" / "MNIST" / "raw"
    write_idx_images(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (256, 28, 28)))
    write_idx_labels(raw / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 256))
    write_idx_images(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (128, 28, 28)))
    write_idx_labels(raw / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 128))
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
