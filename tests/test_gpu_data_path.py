"""The data path of a CUDA run, on the CPU: cache=auto, batches gathered ahead by a thread, cached header checks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from dcgan.data import ImageFolderDataModule
from dcgan.data import files as files_module
from dcgan.data.loader import ShardedPermutation, TensorBatchLoader, _prefetched
from tests.formats import write_folder


def attach(dm: ImageFolderDataModule, device: str) -> None:
    """A stand-in for the Trainer a DataModule sees during fit: only its device matters here."""
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device(device)), global_rank=0, world_size=1, training=True
    )


@pytest.mark.parametrize(("device", "cached"), [("cuda", True), ("cpu", False)])
def test_cache_auto_takes_the_memmap_on_cuda_only(tmp_path: Path, device: str, cached: bool) -> None:
    dm = ImageFolderDataModule(data_dir=str(write_folder(tmp_path / "photos")), image_size=16, num_workers=0,
                               cache_dir=str(tmp_path / "c"))  # fmt: skip
    attach(dm, device)
    dm.prepare_data()
    dm.setup()
    assert dm.cache is cached
    assert bool(list((tmp_path / "c").glob("*.npy"))) is cached


def test_cache_must_be_auto_true_or_false(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cache='yes': expected auto \(on when training on CUDA\), true or false"):
        ImageFolderDataModule(data_dir=str(tmp_path), cache="yes")


def test_prefetched_batches_come_in_order_and_the_thread_stops_when_abandoned() -> None:
    batches = [torch.tensor([i]) for i in range(10)]
    assert [int(b) for b in _prefetched(lambda b: b * 2, batches, depth=2)] == [2 * i for i in range(10)]
    stream = _prefetched(lambda b: b, batches, depth=2)
    assert int(next(stream)) == 0
    stream.close()  # Lightning stops asking at max_steps: the producer must not hang on a full queue
    deadline = time.time() + 5
    while any(t.name == "dcgan-prefetch" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "dcgan-prefetch" for t in threading.enumerate())


def test_a_gather_error_reaches_the_training_loop() -> None:
    def broken(batch: torch.Tensor) -> torch.Tensor:
        raise OSError("memmap read failed")

    with pytest.raises(OSError, match="memmap read failed"):
        list(_prefetched(broken, [torch.tensor([0])], depth=2))


def test_pinned_loader_serves_the_same_batches(monkeypatch) -> None:
    """pin_memory needs CUDA; here it is the identity, so the order and content through the thread are compared."""
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self.clone())
    images = torch.arange(64, dtype=torch.uint8).view(64, 1, 1, 1)
    order = ShardedPermutation(64, seed=3)
    plain = [b.clone() for b in TensorBatchLoader(images, order, 8)]
    pinned = list(TensorBatchLoader(images, order, 8, pin_memory=True))
    assert len(plain) == len(pinned) == 8 and all(torch.equal(a, b) for a, b in zip(plain, pinned, strict=True))


def test_header_checks_are_cached_per_file(tmp_path: Path, monkeypatch) -> None:
    root = write_folder(tmp_path / "photos")
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(files_module.Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path))

    def check() -> None:
        ImageFolderDataModule(data_dir=str(root), num_workers=0, cache_dir=str(tmp_path / "c"))._check_headers()

    check()
    assert len(opened) == 18  # every image once
    opened.clear()
    check()
    assert opened == []  # a second start (or another rank) opens none
    touched = sorted(root.rglob("*.png"))[0]
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))
    check()
    assert opened == [str(touched)]  # a changed file is checked again
