"""The DataModule shared by the in-memory data sets: uint8 images in RAM, float conversion on device."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from dcgan.data.loader import ShardedPermutation, TensorBatchLoader


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], on whatever device the batch is on."""
    return images.float().div_(127.5).sub_(1.0)


class InMemoryDataModule(L.LightningDataModule):
    """Decodes a data set once into a (N, C, H, W) uint8 tensor and serves batches by indexing it.

    Subclasses implement :meth:`load_images` (and :meth:`prepare_data` when files may need a
    download). ``batch_size`` is per device: under DDP the global batch is
    ``batch_size * world_size``.
    """

    name = "images"

    def __init__(self, image_size: int, channels: int, batch_size: int = 128, seed: int = 0) -> None:
        super().__init__()
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.seed = batch_size, seed
        self.images: torch.Tensor | None = None
        self._train_loader: TensorBatchLoader | None = None

    def load_images(self) -> torch.Tensor:
        """Return every training image as uint8 (N, C, image_size, image_size)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.images is not None:
            return
        images = self.load_images()
        if images.dim() == 4 and images.size(1) == 1 and self.channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()  # gray data in an RGB run: replicate
        expected = (self.channels, self.image_size, self.image_size)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.name}: loaded images of shape {tuple(images.shape)} and dtype {images.dtype}, "
                f"expected (N, {', '.join(map(str, expected))}) uint8. Check data.channels and data.image_size."
            )
        self.images = images

    def train_dataloader(self) -> TensorBatchLoader:
        if self.images is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before train_dataloader().")
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        order = ShardedPermutation(len(self.images), self.seed, shuffle=True, rank=rank, world_size=world)
        loader = TensorBatchLoader(self.images, order, self.batch_size, drop_last=True)
        if self._train_loader is not None:  # rebuilt (reload_dataloaders_every_n_epochs): keep the position
            loader.load_state_dict(self._train_loader.state_dict())
        self._train_loader = loader
        return loader

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> torch.Tensor:
        if self.trainer is not None and self.trainer.training and self._train_loader is not None:
            self._train_loader.consumed += 1
        return to_unit_range(batch)
