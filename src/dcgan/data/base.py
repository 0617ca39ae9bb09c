"""The DataModule shared by the in-memory data sets: uint8 images in RAM, float conversion on device."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from dcgan.data.loader import ResumableBatches, ShardedPermutation, TensorBatchLoader
from dcgan.errors import ArgumentError, UserError, check_int, is_int

log = logging.getLogger(__name__)


class DataError(UserError):
    """A data set is missing, corrupt or misconfigured; the message names the files and the fix."""


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], on whatever device the batch is on."""
    return images.float().div_(127.5).sub_(1.0)


def match_channels(images: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    """Documented conversions: gray -> RGB replicates the channel; RGB -> gray takes ITU-R 601 luma."""
    have = images.size(1)
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise DataError(f"{name}: images have {have} channels; cannot convert to data.channels={channels} (1 or 3).")


def file_fingerprint(paths: list[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of each source: a changed, replaced or touched file changes the cache key.

    The path is made absolute without resolving links (``Path.resolve`` stats every component: 4 s of a 200k-file
    folder's start-up); a linked file's size and mtime are its target's, so a change behind a link still counts.
    """
    return [(os.path.abspath(p), (st := os.stat(p)).st_size, st.st_mtime_ns) for p in paths]


class InMemoryDataModule(L.LightningDataModule):
    """Decodes a data set once into a (N, C, H, W) uint8 tensor and serves batches by indexing it.

    Subclasses implement :meth:`load_images`; those read from files also implement
    :meth:`ensure_files` (check or download, run once per node) and :meth:`source_files`, which
    key the decode cache: with ``cache_dir`` set, the decoded tensor is stored there as ``.npy``
    and reused until a source file or a decode setting changes.

    ``batch_size`` is per device: under DDP the global batch is ``batch_size * world_size``.
    """

    name = "images"
    memmap = False  # large caches are memory-mapped instead of read into RAM

    def __init__(
        self, image_size: int, channels: int, batch_size: int = 128, seed: int = 0, cache_dir: str | None = None
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1, "images per device and step", 128)
        if not is_int(image_size) or image_size < 16 or image_size & (image_size - 1):
            raise ArgumentError("image_size", image_size, "a power of two >= 16 (16, 32, 64, ...)", 64)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ArgumentError("channels", channels, "1 (gray) or 3 (RGB)", 3)
        # downloads and cache builds run once, on global rank zero; other nodes read the same data_dir/cache_dir
        # or, on node-local disks, decode in setup
        self.prepare_data_per_node = False
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.seed = batch_size, seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.images: torch.Tensor | None = None
        self.with_labels = False  # a conditional model sets it: batches become (images, labels)
        self._train_loader: ResumableBatches | None = None

    # --- what subclasses provide -------------------------------------------------------------
    def ensure_files(self) -> None:
        """Make sure the source files are present (download if allowed), else raise DataError."""

    def source_files(self) -> list[Path]:
        """Files the images are decoded from; empty for embedded data (no cache then)."""
        return []

    def decode_settings(self) -> dict[str, Any]:
        """Settings that change the decoded pixels, part of the cache key."""
        return {"image_size": self.image_size}

    def load_images(self) -> torch.Tensor:
        """Return every training image as uint8 (N, C, image_size, image_size)."""
        raise NotImplementedError

    num_classes: int | None = None  # data sets with class labels set this and implement load_labels

    def load_labels(self) -> torch.Tensor:
        """Class index (int64) of every image, in the order of :meth:`load_images`."""
        raise DataError(f"{self.name} has no class labels; metrics and probes that need them are unavailable.")

    def write_cache(self, path: Path) -> None:
        """Decode into the .npy file ``path``; large data sets override this to stream into a memmap."""
        np.save(path, self.load_images().numpy())

    # --- splits, for the quality metrics' reference images --------------------------------------
    splits: tuple[str, ...] = ("train",)  # what for_split() can serve; data sets with a test split add it

    @property
    def current_split(self) -> str:
        return getattr(self, "split", "train")

    def for_split(self, split: str) -> InMemoryDataModule:
        """This data set's ``split`` with the same decode settings, set up: the real images metrics compare to."""
        if split == self.current_split:
            if self.images is None:
                self.prepare_data()
                self.setup("fit")
            return self
        if split not in self.splits:
            raise DataError(
                f"{self.name} has no {split!r} split (it has {', '.join(self.splits)}): metrics can compare with "
                f"{' or '.join(self.splits)} only. Set callbacks.quality.reference (or the protocol's split) to one."
            )
        other = copy.copy(self)
        other.split = split
        other.reset_decoded()
        other.prepare_data()
        other.setup("fit")
        return other

    def reset_decoded(self) -> None:
        """Forget what ``setup`` decoded (a copy for another split decodes its own images)."""
        self.images, self._train_loader, self.with_labels = None, None, False

    def num_images(self) -> int:
        if self.images is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run first.")
        return len(self.images)

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 (len(index), C, H, W): the images at ``index`` (set up first)."""
        return self.images[index]

    def identity(self) -> list[Any]:
        """What the decoded images depend on: the source files (path, size, mtime) and decode settings.

        Embedded data sets (no files) use a digest of the images themselves.
        """
        sources = self.source_files()
        if sources:
            return [
                type(self).__name__,
                self.current_split,
                self.channels,
                self.decode_settings(),
                file_fingerprint(sources),
            ]
        if self.images is None:
            self.setup("fit")
        digest = hashlib.sha1(self.images.contiguous().numpy().tobytes()).hexdigest()
        return [type(self).__name__, self.current_split, self.channels, self.decode_settings(), digest]

    # --- cache -------------------------------------------------------------------------------
    def cache_path(self) -> Path | None:
        sources = self.source_files()
        if self.cache_dir is None or not sources:
            return None
        settings = self.decode_settings()
        keyed = getattr(self, "_keyed", None)  # prepare_data, setup and the skipped-files sidecar ask in turn
        if keyed is None or keyed[0] is not sources or keyed[1] != settings:
            key = json.dumps([type(self).__name__, settings, file_fingerprint(sources)])
            self._keyed = keyed = (sources, settings, hashlib.sha1(key.encode()).hexdigest()[:16])
        return self.cache_dir / f"{type(self).__name__}-{keyed[2]}.npy"

    def _build_cache(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        log.info("%s: decoding once into the cache %s", self.name, path)
        try:
            self.write_cache(tmp)
            os.replace(tmp, path)  # atomic: a crashed build never leaves a half cache behind
        finally:
            tmp.unlink(missing_ok=True)

    # --- LightningDataModule -------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.ensure_files()
        path = self.cache_path()
        if path is not None and not path.is_file():
            self._build_cache(path)

    def setup(self, stage: str | None = None) -> None:
        if self.images is not None:
            return
        path = self.cache_path()
        if path is not None and path.is_file():
            images = torch.from_numpy(np.load(path, mmap_mode="c" if self.memmap else None))
        else:
            images = self.load_images()
        images = match_channels(images, self.channels, self.name)
        expected = (self.channels, self.image_size, self.image_size)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise DataError(
                f"{self.name}: loaded images of shape {tuple(images.shape)} and dtype {images.dtype}, "
                f"expected (N, {', '.join(map(str, expected))}) uint8. Check data.channels and data.image_size."
            )
        self.images = images

    @property
    def on_cuda(self) -> bool:
        """Whether the run this DataModule serves trains on CUDA: its batches are then pinned for async copies."""
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> ResumableBatches:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        order = ShardedPermutation(self.num_images(), self.seed, shuffle=True, rank=rank, world_size=world)
        loader = self._batches_in(order)
        if self._train_loader is not None:  # rebuilt (reload_dataloaders_every_n_epochs): keep the position
            loader.load_state_dict(self._train_loader.state_dict())
        self._train_loader = loader
        return loader

    def _batches_in(self, order: ShardedPermutation) -> ResumableBatches:
        """The training batches, in ``order``."""
        if self.images is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before train_dataloader().")
        labels = self._checked_labels() if self.with_labels else None
        return TensorBatchLoader(
            self.images, order, self.batch_size, drop_last=True, labels=labels, pin_memory=self.on_cuda
        )

    def _checked_labels(self) -> torch.Tensor:
        labels = self.load_labels()
        if len(labels) != len(self.images):
            raise DataError(f"{self.name}: {len(labels)} labels for {len(self.images)} images; the files disagree.")
        return labels

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training and self._train_loader is not None:
            self._train_loader.consumed += 1
        if isinstance(batch, (tuple, list)):
            images, labels = batch
            return to_unit_range(images), labels
        return to_unit_range(batch)
