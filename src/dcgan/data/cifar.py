"""CIFAR-10 from torchvision's on-disk layout (``<data_dir>/cifar-10-batches-py/data_batch_*``), without PIL."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dcgan.data.base import DataError, InMemoryDataModule

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# md5s as published with the data set (and listed in torchvision.datasets.CIFAR10)
MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SPLITS["all"] = SPLITS["train"] + SPLITS["test"]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_cifar_batch(path: Path, key: bytes = b"data") -> np.ndarray:
    """One CIFAR python pickle -> its images (N, 3, 32, 32) uint8, or its ``b"labels"`` (N,) int64."""
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="bytes")
        if key == b"labels":
            return np.asarray(entry[key], dtype=np.int64)
        data = np.asarray(entry[key], dtype=np.uint8)
        return data.reshape(-1, 3, 32, 32)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError) as err:
        raise DataError(
            f"CIFAR-10: {path} is not a valid CIFAR-10 python batch ({type(err).__name__}: {err}). "
            f"Delete {path.parent} and extract {ARCHIVE} again (from {URL})."
        ) from err


class CIFAR10DataModule(InMemoryDataModule):
    """CIFAR-10 (Krizhevsky 2009), 32x32 RGB; ``image_size`` other than 32 resizes (bilinear, antialiased).

    ``channels=1`` converts to gray (ITU-R 601 luma). A present but unpacked ``cifar-10-python.tar.gz``
    is extracted; each batch file's md5 is checked when the images are decoded (``verify_md5``).
    """

    name = "CIFAR-10"
    num_classes = 10
    splits = ("train", "test", "all")

    def __init__(
        self,
        data_dir: str,
        image_size: int = 32,
        channels: int = 3,
        batch_size: int = 128,
        seed: int = 0,
        split: str = "train",
        download: bool = False,
        verify_md5: bool = True,
        cache_dir: str | None = None,
        eval_split: str = "test",
    ) -> None:
        super().__init__(image_size, channels, batch_size, seed, cache_dir)
        for key, value in (("split", split), ("eval_split", eval_split)):
            if value not in SPLITS:
                raise DataError(f"data.{key}={value!r}: expected one of {sorted(SPLITS)}.")
        self.eval_split = eval_split
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.split, self.download, self.verify_md5 = split, download, verify_md5

    @property
    def folder(self) -> Path:
        return self.data_dir / FOLDER

    def _missing_files(self) -> list[str]:
        return [name for name in SPLITS[self.split] if not (self.folder / name).is_file()]

    def _extract(self, archive: Path) -> None:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(self.data_dir, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataError(
                f"CIFAR-10: {archive} could not be extracted ({type(err).__name__}: {err}); it is truncated or "
                f"corrupt (its md5 should be c58f30108f718f92721af3b95e74349a). Delete it and download it "
                f"again from {URL}."
            ) from err

    def ensure_files(self) -> None:
        if not self._missing_files():
            return
        archive = self.data_dir / ARCHIVE
        reason = "data.download=false"
        if archive.is_file():
            self._extract(archive)
            reason = f"{archive} does not contain them"
        elif self.download:
            try:
                import torchvision.datasets

                torchvision.datasets.CIFAR10(str(self.data_dir), train=self.split != "test", download=True)
            except Exception as err:  # any network or mirror failure ends in the same advice
                reason = f"the download failed ({type(err).__name__}: {err})"
        if missing := self._missing_files():
            raise self._missing(missing, reason)

    def _missing(self, missing: list[str], reason: str) -> DataError:
        return DataError(
            f"CIFAR-10 {self.split} files not found: {', '.join(missing)} missing in {self.folder} and {reason}.\n"
            f"Fix: download {URL} ({ARCHIVE}, 163 MB) and put it in {self.data_dir} (it is extracted on the "
            f"next run), or extract it there yourself, or point data.data_dir / DCGAN_DATA_DIR at the folder "
            f"that contains {FOLDER}/, or run once with data.download=true where there is internet access."
        )

    def source_files(self) -> list[Path]:
        return [] if self._missing_files() else [self.folder / name for name in SPLITS[self.split]]

    def decode_settings(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "split": self.split}

    def load_images(self) -> torch.Tensor:
        if missing := self._missing_files():
            raise self._missing(missing, "prepare_data did not provide them")
        arrays = []
        for name in SPLITS[self.split]:
            path = self.folder / name
            if self.verify_md5 and (digest := _md5(path)) != MD5[name]:
                raise DataError(
                    f"CIFAR-10: {path} has md5 {digest}, expected {MD5[name]}: the file is truncated or "
                    f"altered. Delete {self.folder} and extract {ARCHIVE} again (from {URL}); "
                    "data.verify_md5=false skips this check for a deliberately modified copy."
                )
            arrays.append(read_cifar_batch(path))
        images = torch.from_numpy(np.concatenate(arrays))  # (N, 3, 32, 32)
        if self.image_size != 32:
            resized = F.interpolate(images.float(), size=self.image_size, mode="bilinear", antialias=True)
            images = resized.round_().clamp_(0, 255).to(torch.uint8)
        return images

    def load_labels(self) -> torch.Tensor:
        if missing := self._missing_files():
            raise self._missing(missing, "prepare_data did not provide them")
        return torch.from_numpy(
            np.concatenate([read_cifar_batch(self.folder / n, b"labels") for n in SPLITS[self.split]])
        )
