"""Data sets of image files (CelebA, any folder): decoded by DataLoader workers, or once into a memmap cache."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, default_collate

from dcgan.data.base import DataError, InMemoryDataModule, file_fingerprint
from dcgan.data.loader import ResumableBatches, ShardedPermutation, WorkerBatchLoader
from dcgan.errors import ArgumentError, check_int

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def decode_image(path: Path, image_size: int, channels: int, crop: int | None = None) -> torch.Tensor:
    """File -> (channels, image_size, image_size) uint8.

    Conversions: any mode (gray, palette, RGBA, CMYK, 16-bit) becomes RGB or L by PIL's ``convert``
    (alpha is dropped, gray is replicated, RGB -> L is ITU-R 601 luma). ``crop`` first takes a
    centred ``crop`` x ``crop`` square (CelebA's 178 protocol); then the image is resized (bilinear,
    antialiased) so its shorter side is ``image_size`` and centre-cropped to a square.
    """
    with Image.open(path) as im:
        im = im.convert("RGB" if channels == 3 else "L")
        if crop is not None:
            left, top = (im.width - crop) // 2, (im.height - crop) // 2
            im = im.crop((left, top, left + crop, top + crop))
        im = ImageOps.fit(im, (image_size, image_size), method=Image.Resampling.BILINEAR)
        array = np.asarray(im, dtype=np.uint8).reshape(image_size, image_size, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (C, H, W)


DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)  # PIL: truncated, unknown, broken chunks


def _damaged(err: Exception) -> bool:
    """A file's bytes cannot be decoded (PIL raises errno-less errors), not an I/O fault of the disk or the network
    (EIO, ESTALE, a file deleted mid-run: those carry an errno and stop the run as they are)."""
    return not (isinstance(err, OSError) and err.errno is not None)


BAD_IMAGES = ("skip", "fail")
# data.bad_images=skip passes over a few damaged files; past this share of the folder the folder (or the archive it
# came from) is broken, and the run stops naming the files, as with data.bad_images=fail.
MAX_BAD_SHARE = 0.1

Failures = list[tuple[int, str]]  # (index in the file list, why it cannot be decoded)


class ImageFiles(Dataset):
    """Map-style dataset over files; ``decode`` is picklable so DataLoader workers can run it.

    Item ``i`` is ``(image, failures)``. With ``skip``, a file that cannot be decoded gives its slot to the next
    readable file in list order (wrapping round): the same replacement in every run, worker and resume, so an exact
    resume stays exact. ``failures`` lists the files passed over, for the main process to report once each (a
    worker's own log line would repeat in every worker and epoch, and its exception arrives wrapped in a
    traceback). Without ``skip`` the image is None when file ``i`` fails. ``known_bad`` (index -> reason) are
    files already found unreadable, passed over without another try.
    """

    def __init__(
        self,
        files: list[Path],
        decode: Callable[[Path], torch.Tensor],
        skip: bool = False,
        known_bad: dict[int, str] | None = None,
    ) -> None:
        self.files, self.decode, self.skip = files, decode, skip
        self.known_bad = known_bad or {}
        self.max_tries = int(MAX_BAD_SHARE * len(files)) + 1  # beyond this many in a row the run stops anyway

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, Failures]:
        failures: Failures = []
        for k in range(min(self.max_tries, len(self.files))):
            j = (i + k) % len(self.files)
            reason = self.known_bad.get(j)
            if reason is None:
                try:
                    return self.decode(self.files[j]), failures
                except DECODE_ERRORS as err:
                    if not _damaged(err):
                        raise
                    reason = f"{type(err).__name__}: {err}"
            failures.append((j, reason))
            if not self.skip:
                break
        return None, failures


def _collate_decoded(items: list[tuple[torch.Tensor | None, Failures]]) -> tuple[torch.Tensor | None, Failures]:
    failures = [failure for _, found in items for failure in found]
    if any(image is None for image, _ in items):
        return None, failures
    return default_collate([image for image, _ in items]), failures


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


class _Indexed(Dataset):
    """``(i, dataset[i])``: the cache build writes each result into slot ``i``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.dataset[i]


def _undecodable(name: str, failures: Failures, files: list[Path], why: str = "") -> DataError:
    shown = "\n".join(f"  {files[i]}: {reason}" for i, reason in failures[:10])
    more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
    return DataError(
        f"{name}: {len(failures)} of {len(files)} image files cannot be read{why}:\n{shown}{more}\n"
        "Fix: delete or replace these files (or re-extract the archive they came from)."
    )


def _too_many(failures: Failures, files: list[Path]) -> bool:
    return len(failures) > MAX_BAD_SHARE * len(files)


class BadImages:
    """The unreadable files one process met, in the main process: each named once, in a log line (``skip``) or in
    the error that stops the run (``fail``); past ``MAX_BAD_SHARE`` of the files the run stops under either."""

    def __init__(self, name: str, files: list[Path], policy: str, where: str = "") -> None:
        self.name, self.files, self.policy, self.where = name, files, policy, where
        self.seen: dict[int, str] = {}

    def note(self, failures: Failures) -> None:
        for i, reason in failures:
            if i in self.seen:
                continue
            self.seen[i] = reason
            if self.policy == "fail":
                raise DataError(
                    f"{self.name}{self.where}: {self.files[i]} cannot be decoded ({reason}). Fix: replace or delete "
                    "it, or pass data.bad_images=skip to train on (its slot then takes the next readable image)."
                )
            log.warning(
                "%s%s: skipped %s (%s): its slot takes the next readable image, the same in every run.",
                self.name, self.where, self.files[i], reason,
            )  # fmt: skip
        if _too_many(list(self.seen.items()), self.files):
            share = f" (more than {MAX_BAD_SHARE:.0%}: not a few damaged files but a broken folder)"
            raise _undecodable(self.name + self.where, sorted(self.seen.items()), self.files, share)

    def report(self) -> None:
        """The end-of-run summary: how many files were skipped, and which."""
        if not self.seen:
            return
        names = ", ".join(str(self.files[i]) for i in sorted(self.seen))
        log.warning("%s%s: %d unreadable image file(s) skipped in this run: %s", self.name, self.where,
                    len(self.seen), names)  # fmt: skip


class _HeaderCache:
    """Header checks already made, per file: ``{path: [size, mtime_ns, reason]}`` ("" when it parsed), in
    ``<cache_dir>/headers-<folder digest>.json``. A file whose size or mtime changed is checked again."""

    def __init__(self, cache_dir: Path | None, folder: Path) -> None:
        digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
        self.path = cache_dir / f"headers-{digest}.json" if cache_dir is not None else None
        self.entries: dict[str, list[Any]] = {}
        self.changed = False
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):  # another process mid-write, a damaged file: check again
                self.entries = {}

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]

    def lookup(self, path: Path) -> str | None:
        entry = self.entries.get(str(path))
        try:
            if self.path is None or entry is None or entry[:2] != self._stamp(path):
                return None
        except OSError:  # a file that vanished: its header check says so
            return None
        return entry[2]

    def store(self, path: Path, reason: str) -> None:
        if self.path is None:
            return
        try:
            self.entries[str(path)] = [*self._stamp(path), reason]
        except OSError:  # gone since it was checked: checked again next time
            return
        self.changed = True

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)  # ranks and sweep jobs checking the same folder never read half of it
        except OSError as err:  # a read-only or full cache_dir: checked again next time, nothing lost
            log.info("Header checks not cached in %s (%s).", self.path, err)


class ImageFileBatches(WorkerBatchLoader):
    """Worker-decoded batches whose failures are reported, once per file, by ``bad`` in the main process."""

    def __init__(
        self,
        dataset: ImageFiles,
        order: ShardedPermutation,
        batch_size: int,
        num_workers: int,
        bad: BadImages,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(dataset, order, batch_size, num_workers, collate_fn=_collate_decoded, pin_memory=pin_memory)
        self.bad = bad

    def _pass(self, batches: list[torch.Tensor]) -> Iterator[Any]:
        for images, failures in super()._pass(batches):
            self.bad.note(failures)
            if images is None:  # past the search limit, which note() reports first; kept as a guard
                raise _undecodable(self.bad.name, failures, self.bad.files)
            yield images


class ImageFilesDataModule(InMemoryDataModule):
    """Base for data sets of image files.

    ``cache=false``: DataLoader workers decode and resize every image each epoch; every file's header is
    checked before training, so unreadable files are reported up front.
    ``cache=true``: every image is decoded and resized once, at ``image_size``, into a uint8
    ``.npy`` memmap under ``cache_dir``; epochs then index it like the small data sets do. The
    cache key covers the file list, each file's size and mtime, and the decode settings.
    ``cache=auto`` (default): true for a run on CUDA, false on the CPU.

    ``bad_images``: a file that cannot be decoded (a truncated download passes the header check) is
    ``skip``-ped, its slot filled by the next readable file, the same on both paths and in every run; or
    it stops the run (``fail``). Either way it is named once; past ``MAX_BAD_SHARE`` of the files the run stops.
    """

    memmap = True

    def __init__(
        self,
        image_size: int,
        channels: int,
        batch_size: int = 128,
        seed: int = 0,
        cache: bool | str = "auto",
        cache_dir: str | None = None,
        num_workers: int = 2,
        crop: int | None = None,
        bad_images: str = "skip",
    ) -> None:
        super().__init__(image_size, channels, batch_size, seed, cache_dir)
        if cache not in (True, False, "auto"):
            raise ArgumentError("cache", repr(cache), "auto (on when training on CUDA), true or false", "auto")
        if cache is True and not cache_dir:
            raise DataError(f"{self.name}: data.cache=true needs data.cache_dir (or paths.cache_dir) to be set.")
        self.cache_setting = cache
        check_int("num_workers", num_workers, 0, "DataLoader worker processes", 4)
        if bad_images not in BAD_IMAGES:
            raise ArgumentError(
                "bad_images", repr(bad_images), "skip (name it, fill its slot with the next readable image) or fail",
                "skip",
            )  # fmt: skip
        self.cache = cache is True  # "auto" is decided when a Trainer attaches (prepare_data, setup)
        self.num_workers, self.crop, self.bad_images = num_workers, crop, bad_images
        self._files: list[Path] | None = None
        self.dataset: ImageFiles | None = None
        self.bad: BadImages | None = None

    def list_files(self) -> list[Path]:
        raise NotImplementedError

    @property
    def files(self) -> list[Path]:
        if self._files is None:
            self._files = self.list_files()
        return self._files

    @property
    def decode(self) -> Callable[[Path], torch.Tensor]:
        return functools.partial(decode_image, image_size=self.image_size, channels=self.channels, crop=self.crop)

    def source_files(self) -> list[Path]:
        return self.files if self.cache else []

    def decode_settings(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "channels": self.channels, "crop": self.crop}

    def reset_decoded(self) -> None:
        super().reset_decoded()
        self._files, self.dataset, self.bad = None, None, None  # another split lists other files

    def num_images(self) -> int:
        return super().num_images() if self.cache else len(self.files)

    def images_at(self, index: torch.Tensor) -> torch.Tensor:
        if self.cache:
            return super().images_at(index)
        if self.dataset is None:
            self.setup("fit")
        return torch.stack([self._decoded(int(i)) for i in index])

    def _decoded(self, i: int) -> torch.Tensor:
        image, failures = self.dataset[i]
        self.bad.note(failures)
        if image is None:
            raise _undecodable(self.name, failures, self.files)
        return image

    def identity(self) -> list[Any]:
        return [
            type(self).__name__,
            self.current_split,
            self.channels,
            self.decode_settings(),
            file_fingerprint(self.files),
        ]

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        workers = self.num_workers
        return DataLoader(dataset, num_workers=workers, persistent_workers=workers > 0, **kwargs)

    def write_cache(self, path: Path) -> None:
        files = self.files
        out = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.uint8, shape=(len(files), self.channels, self.image_size, self.image_size)
        )
        skip = self.bad_images == "skip"
        failures: dict[int, str] = {}
        dataset = ImageFiles(files, self.decode, skip=skip)
        loader = self._loader(_Indexed(dataset), batch_size=256, collate_fn=_as_list)
        for batch in loader:
            for i, (image, found) in batch:
                failures.update(found)
                if image is not None:
                    out[i] = image.numpy()
        out.flush()
        del out
        found = sorted(failures.items())
        if found and (not skip or _too_many(found, files)):
            why = f" (more than {MAX_BAD_SHARE:.0%}: not a few damaged files)" if skip else ""
            raise _undecodable(self.name, found, files, why)
        sidecar = self._skipped_file()
        tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps([[i, str(files[i]), reason] for i, reason in found]))
        os.replace(tmp, sidecar)  # sweep jobs sharing a cache_dir never read half of it
        self._note_skipped(found)

    def _skipped_file(self) -> Path:
        """Beside the cache: the files whose slots it fills with their next readable neighbour."""
        path = self.cache_path()
        assert path is not None, "only with cache=true"
        return path.with_suffix(".skipped.json")

    def _note_skipped(self, found: Failures) -> None:
        if self.bad is None:
            self.bad = BadImages(self.name, self.files, self.bad_images)
        if found and self.bad_images == "fail":  # a cache built under skip, read under fail
            first = self.files[found[0][0]]
            raise DataError(
                f"{self.name}: the cache {self.cache_path()} was built with data.bad_images=skip and fills the "
                f"slots of {len(found)} unreadable file(s) ({first}, ...). Fix: replace them (the cache is rebuilt "
                "when a file changes), or pass data.bad_images=skip."
            )
        self.bad.note(found)

    def load_images(self) -> torch.Tensor:
        """Only used with ``cache=true`` when prepare_data did not build the cache on this node."""
        path = self.cache_path()
        assert path is not None, "load_images is only reached with cache=true"
        self._build_cache(path)
        return torch.from_numpy(np.load(path, mmap_mode="c"))

    def _check_headers(self) -> dict[int, str]:
        """The files whose header cannot be parsed (index -> reason); raises under ``fail`` or past the share.

        With ``cache_dir`` set, each file's result is kept there under its (size, mtime): a start on 200k files
        then stats them (about a second) instead of opening each (a minute or more, on every rank).
        """
        known = _HeaderCache(self.cache_dir, self.files[0].parent if self.files else Path())
        failures: Failures = []
        for i, path in enumerate(self.files):
            reason = known.lookup(path)
            if reason is None:
                try:
                    with Image.open(path) as im:
                        im.size  # noqa: B018 -- opening parses the header; that is the check
                    reason = ""
                except DECODE_ERRORS as err:
                    reason = f"{type(err).__name__}: {err}"
                known.store(path, reason)
            if reason:
                failures.append((i, reason))
        known.save()
        if failures and (self.bad_images == "fail" or _too_many(failures, self.files)):
            why = f" (more than {MAX_BAD_SHARE:.0%}: not a few damaged files)" if self.bad_images == "skip" else ""
            raise _undecodable(self.name, failures, self.files, why)
        return dict(failures)

    def _decide_cache(self) -> None:
        """``cache=auto``: the memmap on a CUDA run, whose GPU would otherwise wait for PIL decoding in two workers
        (tens of ms a batch against a few ms of GPU work); the worker path on the CPU, where the step dominates."""
        if self.cache_setting == "auto":
            self.cache = self.on_cuda and self.cache_dir is not None

    def prepare_data(self) -> None:
        self._decide_cache()
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self._decide_cache()
        if self.cache:
            super().setup(stage)
            if self.bad is None:
                skipped = self._skipped_file()
                found = [(i, reason) for i, _, reason in json.loads(skipped.read_text())] if skipped.is_file() else []
                self._note_skipped(found)
        elif self.dataset is None:
            known_bad = self._check_headers()
            self.bad = BadImages(self.name, self.files, self.bad_images)
            self.bad.note(sorted(known_bad.items()))
            self.dataset = ImageFiles(self.files, self.decode, skip=self.bad_images == "skip", known_bad=known_bad)

    def teardown(self, stage: str) -> None:
        if self.bad is not None:
            self.bad.report()

    def on_exception(self, exception: BaseException) -> None:  # a run stopped early still lists what it skipped
        if self.bad is not None:
            self.bad.report()

    def _batches_in(self, order: ShardedPermutation) -> ResumableBatches:
        if self.cache:
            return super()._batches_in(order)
        if self.dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before train_dataloader().")
        if len(order) < self.batch_size:
            raise DataError(
                f"data.batch_size={self.batch_size} is larger than the {len(order)} images of {self.name} each "
                "process gets, so no full batch is left (the last partial batch is dropped): lower data.batch_size."
            )
        if order.world_size > 1:
            self.bad.where = f" (rank {order.rank})"
        return ImageFileBatches(self.dataset, order, self.batch_size, self.num_workers, self.bad, self.on_cuda)


class ImageFolderDataModule(ImageFilesDataModule):
    """Every png/jpg/jpeg/webp/bmp under ``data_dir`` (recursive): LSUN exports, FFHQ thumbnails, your photos."""

    name = "image folder"

    def __init__(
        self,
        data_dir: str,
        image_size: int = 64,
        channels: int = 3,
        batch_size: int = 128,
        seed: int = 0,
        cache: bool | str = "auto",
        cache_dir: str | None = None,
        num_workers: int = 2,
        bad_images: str = "skip",
    ) -> None:
        super().__init__(image_size, channels, batch_size, seed, cache, cache_dir, num_workers, None, bad_images)
        self.data_dir = Path(data_dir).expanduser().resolve()

    def list_files(self) -> list[Path]:
        if not self.data_dir.is_dir():
            raise DataError(f"{self.name}: {self.data_dir} is not a directory. Set data.data_dir to your image folder.")
        files = sorted(p for p in self.data_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise DataError(
                f"{self.name}: no images in {self.data_dir} (searched recursively for "
                f"{', '.join(IMAGE_EXTENSIONS)}). Set data.data_dir to a folder that holds images."
            )
        return files

    def ensure_files(self) -> None:
        self.files  # noqa: B018 -- listing them raises the DataError for a missing or empty folder


class CelebADataModule(ImageFilesDataModule):
    """Aligned CelebA (Liu et al. 2015) as in the DCGAN paper and the PyTorch tutorial: centre crop 178x178,
    resize to ``image_size``. Reads ``<data_dir>/celeba/img_align_celeba/*.jpg`` (torchvision's layout);
    ``split`` train/valid/test also needs ``list_eval_partition.txt`` beside that folder.
    """

    name = "CelebA"
    SPLITS: ClassVar[dict[str, str | None]] = {"train": "0", "valid": "1", "test": "2", "all": None}
    splits = tuple(SPLITS)
    PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"

    def __init__(
        self,
        data_dir: str,
        image_size: int = 64,
        channels: int = 3,
        batch_size: int = 128,
        seed: int = 0,
        split: str = "all",
        crop: int = 178,
        download: bool = False,
        cache: bool | str = "auto",
        cache_dir: str | None = None,
        num_workers: int = 2,
        bad_images: str = "skip",
    ) -> None:
        super().__init__(image_size, channels, batch_size, seed, cache, cache_dir, num_workers, crop, bad_images)
        if split not in self.SPLITS:
            raise ArgumentError("split", repr(split), f"one of {list(self.SPLITS)}", "all")
        self.base = Path(data_dir).expanduser().resolve() / "celeba"
        self.split, self.download = split, download

    @property
    def image_dir(self) -> Path:
        return self.base / "img_align_celeba"

    def _has_images(self) -> bool:
        return self.image_dir.is_dir() and any(self.image_dir.glob("*.jpg"))

    def _missing(self, what: str) -> DataError:
        return DataError(
            f"CelebA: {what}.\n"
            f"torchvision's download (data.download=true) goes through Google Drive and often fails on its "
            f"quota. Manual route: from {self.PAGE} ('Align&Cropped Images') download img_align_celeba.zip "
            f"(1.4 GB) and, for data.split other than 'all', Eval/list_eval_partition.txt; put both in "
            f"{self.base}/ (the zip is extracted on the next run), or point data.data_dir / DCGAN_DATA_DIR "
            f"at the folder that contains celeba/."
        )

    def _extract(self, archive: Path) -> None:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(self.base)
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise DataError(
                f"CelebA: {archive} could not be extracted ({type(err).__name__}: {err}); it is truncated or "
                f"corrupt (an interrupted Google Drive download often is). Delete it and download it again "
                f"from {self.PAGE}."
            ) from err

    def ensure_files(self) -> None:
        reason = "data.download=false"
        if not self._has_images():
            archive = self.base / "img_align_celeba.zip"
            if archive.is_file():
                self._extract(archive)
                reason = f"{archive} held no img_align_celeba/*.jpg"
            elif self.download:
                try:
                    import torchvision.datasets

                    torchvision.datasets.CelebA(str(self.base.parent), split="all", target_type=[], download=True)
                except Exception as err:  # Google Drive quota, no network, ...
                    reason = f"the download failed ({type(err).__name__}: {err})"
        if not self._has_images():
            raise self._missing(f"no images in {self.image_dir} and {reason}")
        if self.SPLITS[self.split] is not None and not (self.base / "list_eval_partition.txt").is_file():
            raise self._missing(f"data.split={self.split} needs {self.base / 'list_eval_partition.txt'}, not found")

    def list_files(self) -> list[Path]:
        self.ensure_files()
        wanted = self.SPLITS[self.split]
        if wanted is None:
            return sorted(self.image_dir.glob("*.jpg"))
        names = []
        for line in (self.base / "list_eval_partition.txt").read_text().split("\n"):
            parts = line.split()
            if len(parts) == 2 and parts[1] == wanted:
                names.append(parts[0])
        files = [self.image_dir / n for n in names]
        if missing := [p.name for p in files if not p.is_file()]:
            raise self._missing(
                f"{len(missing)} images of split {self.split} listed in list_eval_partition.txt are not in "
                f"{self.image_dir} (e.g. {', '.join(missing[:3])})"
            )
        return files
