"""Lightning glue: score samples every few epochs under named protocols and log them as ``val/<protocol>``."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from dcgan.data.base import DataError
from dcgan.errors import check_int
from dcgan.metrics.build import Extractors, build_suite, check_data
from dcgan.metrics.extractors import inception_weights, missing_inception_message
from dcgan.metrics.protocols import Protocol
from dcgan.metrics.registry import register_extra
from dcgan.metrics.select import available_protocols, check_modes, chosen_protocols
from dcgan.metrics.suite import QualitySuite, Settings, validate

log = logging.getLogger(__name__)


class QualityMetrics(L.Callback):
    """Every ``every_n_epochs``, ``num_samples`` images from G (its EMA when on) against the ``reference`` split.

    An epoch shorter than ``min_batches`` is scored every few epochs instead, so that at least ``min_batches``
    training batches separate two scores (the digits' 28-batch epochs: every 4th); the last epoch of a run
    is always scored.

    Keys carry their protocol: ``val/cfid1k_test`` is the classifier FID of 1,000 samples against 1,000 test
    images. ``classifier``: ``cfid``, ``class_balance`` (and ``class_acc`` for a conditional G) from the offline
    classifier trained on the training split (labelled data sets; trained once, cached in ``cache_dir``).
    ``inception``: ``fid``, ``kid``, ``is`` from the Inception weights file at ``inception_weights`` (or
    ``$DCGAN_INCEPTION_WEIGHTS``). ``heldout``: ``hfid`` from the held-out scorer (trained on the test split).
    ``auto`` uses what is available and says once what is not; ``on`` makes a missing prerequisite an error.
    ``extra``: more metrics, ``{label: Metric}`` (config: ``_target_`` nodes of ``dcgan.metrics.Metric``
    subclasses), registered and logged as ``val/<name><count>[_<split>]`` when their extractor is on.
    Samples use a fixed seed, so epochs compare; under DDP each rank generates and scores its share.
    Skipped under ``fast_dev_run``.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        min_batches: int = 100,
        num_samples: int = 1000,
        batch_size: int = 500,
        reference: str = "train",
        classifier: str = "auto",
        classifier_steps: int = 800,
        inception: str = "auto",
        inception_weights: str | None = None,
        heldout: str = "off",
        heldout_steps: int = 1500,
        kid_subset_size: int | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.modes = check_modes(classifier=classifier, inception=inception, heldout=heldout)
        check_int("every_n_epochs", every_n_epochs, 1, "epochs between scores; ~callbacks.quality turns it off", 1)
        check_int("min_batches", min_batches, 0, "training batches between two scores", 100)
        check_int("num_samples", num_samples, 2, "generated images per score", 1000)
        self.every_n_epochs, self.min_batches = every_n_epochs, min_batches
        self.num_samples, self.reference = num_samples, reference
        self.extra = register_extra(extra)  # their names
        self.inception_path = inception_weights
        self.settings = Settings(kid_subset_size=kid_subset_size, batch_size=batch_size, seed=seed)
        self.how = Extractors(
            inception_weights=None,
            classifier_steps=classifier_steps,
            heldout_steps=heldout_steps,
            cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
        )
        self.suite: QualitySuite | None = None
        self.seconds = 0.0  # spent monitoring: classifier training on first use, reference statistics, scoring
        self._started = 0.0
        validate(chosen_protocols(self.modes, num_samples, reference, self.extra), self.settings)

    def available(self, datamodule: L.LightningDataModule, conditional: bool = True) -> list[Protocol]:
        """The protocols this callback scores for ``datamodule`` (raises for ``on`` without its input)."""
        return available_protocols(
            datamodule, self.modes, self.num_samples, self.reference, self.inception_path, self.extra, conditional
        )

    def names(self, datamodule: L.LightningDataModule, conditional: bool = False) -> list[str]:
        """The ``val/*`` keys a run on ``datamodule`` logs (``class_acc`` only for a conditional G)."""
        return [f"val/{p.name}" for p in self.available(datamodule, conditional)]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check every prerequisite and size now, before any training."""
        self._started = time.perf_counter()
        protocols = self.available(trainer.datamodule)
        if protocols:
            check_data(trainer.datamodule, protocols)
        if self.modes["inception"] == "auto" and not any(p.extractor == "inception" for p in protocols):
            rank_zero_warn(f"FID/KID/IS are off for this run: {missing_inception_message(self.inception_path)}")
        scored = {p.metric for p in protocols}
        if off := [name for name in self.extra if name not in scored]:
            rank_zero_warn(f"{', '.join(off)} off for this run: the extractor is off or lacks its inputs (labels).")
        shown = self.names(trainer.datamodule, conditional=bool(pl_module.hparams.get("num_classes")))
        rank_zero_info(
            "Quality monitor: "
            + (", ".join(shown) if shown else "no metric for this data set")
            + f" every {self.every_n_epochs} epoch(s), at least {self.min_batches} batches apart, and at the end"
        )

    def interval(self, trainer: L.Trainer) -> int:
        """Epochs between two scores: ``every_n_epochs``, or more when an epoch has fewer than ``min_batches``."""
        batches = trainer.num_training_batches  # known once the fit loop has its loader
        short = math.ceil(self.min_batches / batches) if batches and not math.isinf(batches) else 1
        return max(self.every_n_epochs, short)

    def due(self, trainer: L.Trainer) -> bool:
        """Whether this epoch's end is scored: every ``interval`` epochs, and the run's last epoch."""
        epoch = trainer.current_epoch + 1
        last = trainer.should_stop or (trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch)
        last = last or (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)
        return last or epoch % self.interval(trainer) == 0

    def build(self, datamodule: L.LightningDataModule, device: torch.device) -> QualitySuite | None:
        """The suite for ``datamodule``: classifiers trained or loaded, reference statistics computed or loaded."""
        protocols = self.available(datamodule)
        if not protocols:
            return None
        how = Extractors(
            inception_weights=inception_weights(self.inception_path),
            classifier_steps=self.how.classifier_steps,
            heldout_steps=self.how.heldout_steps,
            cache_dir=self.how.cache_dir,
        )
        try:
            return build_suite(datamodule, protocols, how, self.settings, device)
        except DataError as err:
            if "on" in self.modes.values():
                raise
            rank_zero_warn(f"Quality metrics are off for this run: {err}")
            return None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:  # a smoke test of the training hooks, like Lightning's own logging and checkpoints
            return
        if self.num_samples < trainer.world_size:
            raise ValueError(
                f"callbacks.quality.num_samples={self.num_samples} < {trainer.world_size} ranks: every rank scores "
                "a share of the samples; use at least one sample per rank."
            )
        start = time.perf_counter()
        if trainer.world_size > 1 and self.how.cache_dir is not None:
            # one rank trains the classifiers and writes the reference statistics; the others then read them
            failed: Exception | None = None
            if trainer.is_global_zero:
                try:
                    self.suite = self.build(trainer.datamodule, pl_module.device)
                except Exception as err:  # reach the barrier anyway, so no rank waits for one that died
                    failed = err
            trainer.strategy.barrier("quality-cache")
            if trainer.strategy.broadcast(failed is not None, src=0):  # every rank stops, none waits for another
                raise failed or RuntimeError("Rank 0 failed to build the quality metrics; its log says why.")
            if not trainer.is_global_zero:
                self.suite = self.build(trainer.datamodule, pl_module.device)
        else:
            self.suite = self.build(trainer.datamodule, pl_module.device)
        self.seconds += time.perf_counter() - start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.suite is None or trainer.sanity_checking or trainer.fast_dev_run or not self.due(trainer):
            return
        start = time.perf_counter()
        classes = pl_module.hparams.get("num_classes") or None
        results = self.suite.score(pl_module.sample, pl_module.generator.nz, classes)
        self.seconds += time.perf_counter() - start
        for name, value in results.items():  # for ModelCheckpoint(monitor=...) and train()'s return value
            pl_module.log(f"val/{name}", value, on_step=False, on_epoch=True, logger=False, sync_dist=False)
        for logger in trainer.loggers:  # at global_step, the x-axis of every other chart
            logger.log_metrics({f"val/{k}": v for k, v in results.items()}, step=trainer.global_step)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in results.items() if not k.endswith("_std"))
        rank_zero_info(f"epoch {trainer.current_epoch} (step {trainer.global_step}): {summary}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.suite is not None:
            wall = time.perf_counter() - self._started
            rank_zero_info(
                f"Quality monitoring took {self.seconds:.1f} s of this run's {wall:.0f} s "
                f"({100 * self.seconds / max(wall, 1e-9):.1f}%: classifier on first use, reference statistics, scoring)"
            )
