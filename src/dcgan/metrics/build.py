"""Assemble a ``QualitySuite`` for a data set: train or load the classifiers, load Inception, cache reference stats."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from dcgan.data.base import DataError, InMemoryDataModule, to_unit_range
from dcgan.metrics.classifier import accuracy, cached_classifier
from dcgan.metrics.extractors import ClassifierExtractor, Extractor, InceptionExtractor, PerChannelExtractor
from dcgan.metrics.protocols import Protocol
from dcgan.metrics.reference import ReferenceStats, cached_reference, compute_reference, reference_key
from dcgan.metrics.registry import METRICS
from dcgan.metrics.suite import QualitySuite, Settings
from dcgan.progress import Progress

log = logging.getLogger(__name__)

REFERENCE_SEED = 0  # real images are drawn with a fixed seed, so every run and sweep job shares the cache


@dataclass(frozen=True)
class Extractors:
    """How to get each feature extractor (what the config's ``callbacks.quality`` / ``evaluate.yaml`` set)."""

    inception_weights: Path | None = None
    classifier_steps: int = 800
    heldout_steps: int = 1500
    cache_dir: Path | None = None


def make_extractors(dm: InMemoryDataModule, kinds: set[str], how: Extractors) -> dict[str, Extractor]:
    """The extractors ``kinds`` names; classifiers are trained once (on the data set's labels) and cached."""
    extractors: dict[str, Extractor] = {}
    if "inception" in kinds:
        if how.inception_weights is None:
            raise FileNotFoundError("Inception weights are needed for fid/kid/is and none were given.")
        extractors["inception"] = InceptionExtractor(how.inception_weights)
    if "classifier" in kinds:
        extractors["classifier"] = _classifier(dm, dm.current_split, "classifier", how)
    if "heldout" in kinds:
        extractors["heldout"] = _classifier(dm, "test", "heldout", how)
    return extractors


def _classifier(dm: InMemoryDataModule, split: str, kind: str, how: Extractors) -> Extractor:
    """The ``classifier`` (trained on ``split``, the training split) or ``heldout`` scorer (the test split).

    A data set whose channels each hold a digit (``digit_channels``: Stacked MNIST) gets a one-channel digit
    classifier (``digit_classes`` classes) trained on its source digits and read per channel, and its accuracy on
    10,000 MNIST digits it never saw (``unseen_digits``) is logged: a mode count is only as good as it.
    """
    arch, steps = ("heldout", how.heldout_steps) if kind == "heldout" else ("digit", how.classifier_steps)
    if not getattr(dm, "digit_channels", False):
        data = dm.for_split(split)
        model = cached_classifier(data.images, data.load_labels(), dm.num_classes, how.cache_dir, steps, arch)
        return ClassifierExtractor(model, kind)
    images, labels = dm.digits(split)
    model = cached_classifier(images, labels, dm.digit_classes, how.cache_dir, steps, arch)
    unseen = dm.unseen_digits(split)
    if unseen is None:
        log.info("%s digit classifier: trained on all of MNIST's digits, so none is left to measure it on", kind)
    else:
        stride = max(1, len(unseen[0]) // 10_000)  # 10k of them: the accuracy to about 0.1%, in a few seconds
        images, labels = unseen[0][::stride], unseen[1][::stride]
        log.info(
            "%s digit classifier (trained on the %s digits): %.2f%% correct on %d MNIST digits it never saw",
            kind, split, 100 * accuracy(model, images, labels), len(images),
        )  # fmt: skip
    return PerChannelExtractor(model, kind)


def real_batches(dm: InMemoryDataModule, n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """``n`` of the data set's images drawn with a fixed seed (all, in order, when it has no more), in [-1, 1]."""
    total = dm.num_images()
    if n >= total:  # the whole split, in the data set's order: a folder's real images as torch-fidelity reads them
        order = torch.arange(total)
    else:
        order = torch.randperm(total, generator=torch.Generator().manual_seed(REFERENCE_SEED))[:n]
    for chunk in order.split(batch_size):
        yield to_unit_range(dm.images_at(chunk))


def build_suite(
    dm: InMemoryDataModule,
    protocols: list[Protocol],
    how: Extractors,
    settings: Settings | None = None,
    device: torch.device | str = "cpu",
) -> QualitySuite:
    """Everything ``protocols`` need for ``dm``: extractors, and reference statistics per (extractor, split)."""
    settings = settings or Settings()
    extractors = make_extractors(dm, {p.extractor for p in protocols}, how)
    references: dict[tuple[str, str], ReferenceStats] = {}
    for kind, split in sorted({(p.extractor, p.split) for p in protocols if p.split}):
        wanted = [p for p in protocols if (p.extractor, p.split) == (kind, split)]
        n = max(p.num_samples for p in wanted)
        keep = {p.output for p in wanted if METRICS[p.metric].reference_features}
        real = dm.for_split(split)
        n = min(n, real.num_images())  # the whole split when it has no more: one cache entry for any larger N
        for p in wanted:
            METRICS[p.metric].check(p, settings, num_real=n)
        extractor = extractors[kind].to(device)
        path = None
        if how.cache_dir is not None:
            key = reference_key(real.identity(), split, extractor.digest, n, REFERENCE_SEED)
            path = how.cache_dir / "reference" / f"{kind}-{split}-{key}.npz"

        def extract(batch: torch.Tensor, extractor: Extractor = extractor) -> dict[str, torch.Tensor]:
            return extractor(batch.to(device))

        def build(
            real: InMemoryDataModule = real, n: int = n, keep: set[str] = keep, what: str = kind
        ) -> ReferenceStats:
            total = min(n, real.num_images())
            with Progress(f"reference statistics: {what} features of the {real.current_split} split", total) as p:
                return compute_reference(real_batches(real, n, settings.batch_size), extract, keep, p.advance)

        references[(kind, split)], hit = cached_reference(path, build, keep)
        if hit:
            log.info("Reference statistics (%s, %s split) from the cache: %s", kind, split, path)
    return QualitySuite(protocols, extractors, references, settings, device)


def check_data(dm: InMemoryDataModule, protocols: list[Protocol]) -> None:
    """Raise DataError now when ``dm`` cannot serve what ``protocols`` need (labels, a test split)."""
    kinds = {p.extractor for p in protocols}
    labelled = [p.name for p in protocols if p.extractor in ("classifier", "heldout")]
    if labelled and getattr(dm, "num_classes", None) is None:
        raise DataError(f"{dm.name} has no class labels: {', '.join(labelled)} need a labelled data set.")
    for split in sorted({p.split for p in protocols if p.split} | ({"test"} if "heldout" in kinds else set())):
        if split != dm.current_split and split not in dm.splits:
            needing = [p for p in protocols if p.split == split or (p.extractor == "heldout" and split == "test")]
            names = ", ".join(p.name for p in needing)
            raise DataError(
                f"{names}: {dm.name} has no {split!r} split (it has {', '.join(dm.splits)}). "
                f"Name protocols against {' or '.join(dm.splits)}."
            )
