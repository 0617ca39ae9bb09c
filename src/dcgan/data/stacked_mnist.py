"""Stacked MNIST, the mode-collapse benchmark of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018):
three MNIST digits as the R, G and B channels, so the digit triple is one of 1,000 modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcgan.data.base import DataError, InMemoryDataModule
from dcgan.data.mnist import MNISTDataModule
from dcgan.errors import ArgumentError, check_int

SOURCES = {"train": ("train",), "train+test": ("train", "test")}  # source -> the MNIST splits its digits come from
TEST_STACK_SEED = 0  # the test stacks are the same for every run, so every run's *_test metric has one reference
_STREAMS = {"train": 0, "test": 1}  # train and test stacks come from independent random streams
_PLACE = torch.tensor([100, 10, 1])  # R is the most significant digit: mode 473 = 4 in R, 7 in G, 3 in B


def mode_of(digit_labels: torch.Tensor) -> torch.Tensor:
    """(N, 3) digit labels (R, G, B) -> (N,) int64 mode ids 100 * R + 10 * G + B, in 0..999."""
    if digit_labels.dim() != 2 or digit_labels.size(1) != 3:
        raise ValueError(f"mode_of: expected (N, 3) digit labels (R, G, B), got shape {tuple(digit_labels.shape)}.")
    return (digit_labels.long() * _PLACE.to(digit_labels.device)).sum(1)


def draw_stacks(num_digits: int, num_stacks: int, seed: int, stream: int = 0) -> torch.Tensor:
    """(num_stacks, 3) int64 digit indices, each uniform over ``num_digits`` with replacement, from (seed, stream).

    numpy's SeedSequence keeps the stream apart from torch's shuffles of the same seed.
    """
    rng = np.random.default_rng([seed, stream])
    return torch.from_numpy(rng.integers(0, num_digits, size=(num_stacks, 3), dtype=np.int64))


class StackedImages:
    """A (S, 3, H, W) uint8 image set held as its parts: the digits' pixels (N, H, W) and a (S, 3) table of digit
    indices, one row per image. Indexing gathers (``images[idx]`` is a uint8 tensor), so 128,000 stacks of
    60,000 digits take 64 MB instead of 393 MB. It offers what the data modules, loaders and the probe use of an
    image tensor: ``len``, ``[index]``, ``shape``, ``size``, ``dim`` and ``dtype``; ``images[:]`` is the full tensor.
    """

    dtype = torch.uint8

    def __init__(self, pixels: torch.Tensor, stacks: torch.Tensor) -> None:
        self.pixels, self.stacks = pixels, stacks

    def __len__(self) -> int:
        return len(self.stacks)

    def __getitem__(self, index: Any) -> torch.Tensor:
        stacks = self.stacks[index]  # (B, 3) digit indices
        # index_select: a third of the time of pixels[stacks] (30 us per 64 images), faster than a materialised tensor
        return self.pixels.index_select(0, stacks.reshape(-1)).view(*stacks.shape, *self.pixels.shape[1:])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.stacks), 3, *self.pixels.shape[1:]))

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return 4


class StackedMNISTDataModule(InMemoryDataModule):
    """``num_stacks`` images, each three MNIST digits drawn uniformly with replacement as R, G and B; the label
    (``num_classes = 1000``) is the mode 100 * R + 10 * G + B (:func:`mode_of`).

    The stacks are drawn once, from ``stack_seed`` (the run's ``seed`` unless pinned): a fresh run with the same
    seed trains on the same stacks, and a resumed run continues the same order. ``source`` picks the digits:
    ``train`` (MNIST's 60,000 training digits) or ``train+test`` (all 70,000, as VEEGAN). The ``test`` split is
    ``num_test_stacks`` stacks of MNIST's 10,000 test digits drawn from a fixed seed, the same for every run; the
    held-out digit scorer is trained on those test digits, so claims use ``source=train``, whose stacks share no
    digit with it. Digits are fitted to ``image_size`` as ``data=mnist`` fits them (``fit``). Nothing is cached:
    the digits decode in 0.1-0.3 s and the stacks are gathered per batch.

    For the metrics: ``digit_channels`` says each channel holds one digit, and :meth:`digits` gives a split's
    source digits with their labels, to train a one-channel digit classifier on.
    """

    name = "Stacked MNIST"
    num_classes = 1000
    splits = ("train", "test")
    digit_channels = True
    digit_classes = 10  # per channel: mode ids are base-10 numerals (mode_of)
    # the benchmark's protocols, scored wherever their scorer is on: modes/kl and precision, recall, density,
    # coverage on the held-out scorer (evaluate.py, claims); cmodes/ckl on the training-time classifier (the monitor)
    metrics = ("modes", "kl", "hprecision", "hrecall", "hdensity", "hcoverage", "cmodes", "ckl")

    def __init__(
        self,
        data_dir: str,
        image_size: int = 32,
        channels: int = 3,
        batch_size: int = 64,
        seed: int = 0,
        num_stacks: int = 128_000,
        source: str = "train",
        stack_seed: int | None = None,
        num_test_stacks: int = 26_000,
        split: str = "train",
        fit: str = "pad",
        download: bool = False,
        eval_split: str = "test",
    ) -> None:
        if channels != 3 or isinstance(channels, bool):
            raise ArgumentError("channels", channels, "3: the three digits are the R, G and B channels", 3)
        super().__init__(image_size, channels, batch_size, seed)
        check_int("num_stacks", num_stacks, 1, "training images of three digits; VEEGAN, PacGAN: 128000", 128000)
        check_int("num_test_stacks", num_test_stacks, 1, "test images, each three test digits", 26000)
        if source not in SOURCES:
            raise ArgumentError(
                "source", repr(source), "train (MNIST's 60,000 training digits) or train+test (all 70,000)", "train"
            )
        stack_seed = seed if stack_seed is None else stack_seed
        check_int("stack_seed", stack_seed, 0, "the seed the stacks are drawn from", 0)
        for key, value in (("split", split), ("eval_split", eval_split)):
            if value not in self.splits:
                raise ArgumentError(key, repr(value), f"one of {list(self.splits)}", "test")
        self.num_stacks, self.num_test_stacks, self.stack_seed = num_stacks, num_test_stacks, stack_seed
        self.source, self.split, self.eval_split, self.fit = source, split, eval_split, fit
        # MNIST's own readers: the same IDX checks, 28 -> 32 padding, download route and missing-file messages
        self._mnist = {
            part: MNISTDataModule(data_dir, image_size, 1, seed=seed, split=part, fit=fit, download=download)
            for part in ("train", "test")
        }
        self.data_dir = self._mnist["train"].data_dir
        self._decoded: dict[tuple[str, str], torch.Tensor] = {}  # (what, split) -> pixels or labels, shared by copies

    def _parts(self, split: str) -> tuple[str, ...]:
        """The MNIST splits whose digits ``split`` stacks."""
        return SOURCES[self.source] if split == "train" else ("test",)

    def _stack_settings(self, split: str) -> tuple[int, int]:
        """(number of stacks, seed) of ``split``."""
        return (self.num_stacks, self.stack_seed) if split == "train" else (self.num_test_stacks, TEST_STACK_SEED)

    # --- the source digits ---------------------------------------------------------------------
    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise DataError(f"{self.name} has no {split!r} split (it has {', '.join(self.splits)}).")

    def _pixels(self, split: str) -> torch.Tensor:
        """uint8 (N, 1, image_size, image_size): the digits of ``split``, in file order (train before test)."""
        key = ("pixels", split)
        if key not in self._decoded:
            parts = [self._mnist[p] for p in self._parts(split)]
            for part in parts:
                part.ensure_files()
            self._decoded[key] = torch.cat([part.load_images() for part in parts])
        return self._decoded[key]

    def _labels(self, split: str) -> torch.Tensor:
        key = ("labels", split)
        if key not in self._decoded:
            labels = torch.cat([self._mnist[p].load_labels() for p in self._parts(split)])
            if len(labels) != len(self._pixels(split)):
                raise DataError(
                    f"{self.name}: {len(labels)} digit labels for {len(self._pixels(split))} digits in "
                    f"{self._mnist['train'].raw_dir}; the images and labels files disagree. Fetch both again."
                )
            self._decoded[key] = labels
        return self._decoded[key]

    def digits(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The digits ``split`` stacks: uint8 (N, 1, H, W) and their (N,) int64 labels 0..9.

        ``train``: MNIST's training digits (all 70,000 with ``source=train+test``); ``test``: its 10,000 test digits.
        """
        self._check_split(split)
        return self._pixels(split), self._labels(split)

    def unseen_digits(self, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """MNIST's digits that ``digits(split)`` does not hold (a classifier trained on those never saw them), as
        uint8 (N, 1, H, W) and labels; None with ``source=train+test``, whose training digits are all of MNIST."""
        self._check_split(split)
        other = [p for p in ("train", "test") if p not in self._parts(split)]
        if not other:
            return None
        part = self._mnist[other[0]]
        part.ensure_files()
        return part.load_images(), part.load_labels()

    def stacks(self, split: str) -> torch.Tensor:
        """(S, 3) int64: the indices into ``digits(split)`` of each image's R, G and B digit."""
        self._check_split(split)
        num_stacks, seed = self._stack_settings(split)
        return draw_stacks(len(self._pixels(split)), num_stacks, seed, _STREAMS[split])

    # --- InMemoryDataModule ----------------------------------------------------------------------
    def ensure_files(self) -> None:
        for part in self._parts(self.split):
            self._mnist[part].ensure_files()

    def source_files(self) -> list[Path]:
        return [path for part in self._parts(self.split) for path in self._mnist[part].source_files()]

    def decode_settings(self) -> dict[str, Any]:
        num_stacks, seed = self._stack_settings(self.split)
        digits = "+".join(self._parts(self.split))
        return {
            "image_size": self.image_size,
            "fit": self.fit,
            "digits": digits,
            "num_stacks": num_stacks,
            "seed": seed,
        }

    def setup(self, stage: str | None = None) -> None:
        if self.images is None:
            self.images = StackedImages(self._pixels(self.split)[:, 0], self.stacks(self.split))  # (N, H, W), (S, 3)

    def load_images(self) -> torch.Tensor:
        """Every image as one (S, 3, H, W) tensor (393 MB for 128,000 stacks); training gathers per batch instead."""
        self.setup()
        return self.images[:]

    def load_labels(self) -> torch.Tensor:
        """Mode id (0..999) of every image of the current split."""
        self.setup()
        return mode_of(self._labels(self.split)[self.images.stacks])  # (S, 3) digit labels -> (S,)
