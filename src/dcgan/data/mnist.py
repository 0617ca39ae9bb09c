"""MNIST and Fashion-MNIST from torchvision's on-disk layout (``<data_dir>/MNIST/raw/*-ubyte[.gz]``)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dcgan.data.base import DataError, InMemoryDataModule
from dcgan.errors import ArgumentError

_IMAGE_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
_LABEL_FILES = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


def read_idx_images(path: Path) -> np.ndarray:
    """Read an IDX3 image file (plain or .gz) into a (N, H, W) uint8 array, checking its header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path} is not a readable IDX file ({err}). Delete it and fetch it again.") from err
    if len(raw) < 16:
        raise DataError(
            f"{path} is truncated ({len(raw)} bytes, shorter than the 16-byte IDX3 header). "
            "Delete it and fetch it again."
        )
    magic, n, h, w = (int(v) for v in np.frombuffer(raw[:16], dtype=">i4"))
    if magic != _IMAGES_MAGIC:
        raise DataError(
            f"{path} has magic number {magic}, expected {_IMAGES_MAGIC} for an IDX3 image file (2049 means a "
            "labels file under an images name). Replace it with the official images file."
        )
    if len(raw) != 16 + n * h * w:
        raise DataError(
            f"{path} is truncated or corrupt: header says {n} images of {h}x{w} "
            f"({16 + n * h * w} bytes) but the file has {len(raw)} bytes. Delete it and fetch it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w)


def read_idx_labels(path: Path) -> np.ndarray:
    """Read an IDX1 label file (plain or .gz) into a (N,) uint8 array, checking its header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path} is not a readable IDX file ({err}). Delete it and fetch it again.") from err
    magic, n = (int(v) for v in np.frombuffer(raw[:8], dtype=">i4")) if len(raw) >= 8 else (0, -1)
    if magic != _LABELS_MAGIC or len(raw) != 8 + n:
        raise DataError(f"{path} is not a complete IDX1 labels file. Delete it and fetch it again.")
    return np.frombuffer(raw, dtype=np.uint8, offset=8)


class MNISTDataModule(InMemoryDataModule):
    """MNIST digits, 28x28 gray, fitted to ``image_size``.

    ``fit="pad"`` (default) pads 2 px of black on each side to 32x32, which keeps every pixel
    exact (LeNet-5 does the same), then resizes if ``image_size`` is not 32;
    ``fit="resize"`` resizes 28 -> ``image_size`` directly (bilinear, antialiased).
    """

    name = "MNIST"
    folder = "MNIST"  # torchvision's folder name, and its dataset class name
    num_classes = 10
    splits = ("train", "test")

    def __init__(
        self,
        data_dir: str,
        image_size: int = 32,
        channels: int = 1,
        batch_size: int = 128,
        seed: int = 0,
        split: str = "train",
        fit: str = "pad",
        download: bool = False,
        cache_dir: str | None = None,
        eval_split: str = "test",
    ) -> None:
        super().__init__(image_size, channels, batch_size, seed, cache_dir)
        for key, value in (("split", split), ("eval_split", eval_split)):
            if value not in _IMAGE_FILES:
                raise ArgumentError(key, repr(value), f"one of {sorted(_IMAGE_FILES)}", "test")
        self.eval_split = eval_split
        if fit not in ("pad", "resize"):
            raise ArgumentError("fit", repr(fit), "pad or resize", "pad")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.split, self.fit, self.download = split, fit, download

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.folder / "raw"

    def _image_file(self, files: dict[str, str] = _IMAGE_FILES) -> Path | None:
        stem = self.raw_dir / files[self.split]
        for candidate in (stem, stem.with_name(stem.name + ".gz")):
            if candidate.is_file():
                return candidate
        return None

    def load_labels(self) -> torch.Tensor:
        path = self._image_file(_LABEL_FILES)
        if path is None:
            name = _LABEL_FILES[self.split]
            raise DataError(
                f"{self.name}: labels file {name}[.gz] not found in {self.raw_dir}; put it beside the images."
            )
        return torch.from_numpy(read_idx_labels(path).astype(np.int64))

    def _torchvision_download(self) -> None:
        import torchvision.datasets

        getattr(torchvision.datasets, self.folder)(str(self.data_dir), train=self.split == "train", download=True)

    def ensure_files(self) -> None:
        if self._image_file() is not None:
            return
        reason = "data.download=false"
        if self.download:
            try:
                self._torchvision_download()
            except Exception as err:  # any network or mirror failure ends in the same advice
                reason = f"the download failed ({type(err).__name__}: {err})"
            if self._image_file() is not None:
                return
        raise self._missing(reason)

    def _missing(self, reason: str) -> DataError:
        name = _IMAGE_FILES[self.split]
        return DataError(
            f"{self.name} {self.split} images not found: looked for {name} or {name}.gz in {self.raw_dir} "
            f"and {reason}.\n"
            f"Fix: put the official files ({name}.gz and its labels file) in that folder, point "
            f"data.data_dir (or the DCGAN_DATA_DIR environment variable) at the folder that contains "
            f"{self.folder}/raw/, or run once with data.download=true on a machine with internet access "
            f"(torchvision.datasets.{self.folder} then fetches them)."
        )

    def source_files(self) -> list[Path]:
        path = self._image_file()
        return [path] if path is not None else []

    def decode_settings(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "fit": self.fit}

    def load_images(self) -> torch.Tensor:
        path = self._image_file()
        if path is None:  # ensure_files ran on another node, or was skipped
            raise self._missing("prepare_data did not provide them")
        images = torch.from_numpy(read_idx_images(path).copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
        if self.fit == "pad":
            images = F.pad(images, (2, 2, 2, 2))  # (N, 1, 32, 32), black border
        if images.shape[-1] != self.image_size:
            resized = F.interpolate(images.float(), size=self.image_size, mode="bilinear", antialias=True)
            images = resized.round_().clamp_(0, 255).to(torch.uint8)
        return images


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Xiao et al. 2017): same files, sizes and options as MNIST, under ``FashionMNIST/raw``."""

    name = "Fashion-MNIST"
    folder = "FashionMNIST"
