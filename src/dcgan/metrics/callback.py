"""Lightning glue: score samples every few epochs under named protocols and log them as ``val/<protocol>``."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from dcgan.data.base import DataError
from dcgan.errors import ArgumentError, check_int
from dcgan.metrics.build import Extractors, build_suite, check_data
from dcgan.metrics.extractors import inception_weights, missing_inception_message
from dcgan.metrics.protocols import Protocol, protocols_for
from dcgan.metrics.suite import QualitySuite, Settings, validate

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")


class QualityMetrics(L.Callback):
    """Every ``every_n_epochs``, ``num_samples`` images from G (its EMA when on) against the ``reference`` split.

    An epoch shorter than ``min_batches`` is scored every few epochs instead, so that at least ``min_batches``
    training batches separate two scores (the digits' 28-batch epochs: every 4th); the last epoch of a run
    is always scored.

    Keys carry their protocol: ``val/cfid1k_test`` is the classifier FID of 1,000 samples against 1,000 test
    images. ``classifier``: ``cfid``, ``coverage`` (and ``class_acc`` for a conditional G) from the offline
    classifier trained on the training split (labelled data sets; trained once, cached in ``cache_dir``).
    ``inception``: ``fid``, ``kid``, ``is`` from the Inception weights file at ``inception_weights`` (or
    ``$DCGAN_INCEPTION_WEIGHTS``). ``heldout``: ``hfid`` from the held-out scorer (trained on the test split).
    ``auto`` uses what is available and says once what is not; ``on`` makes a missing prerequisite an error.
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
    ) -> None:
        modes = {"classifier": classifier, "inception": inception, "heldout": heldout}
        for key, value in modes.items():
            if isinstance(value, bool):  # YAML reads a bare off/on as a boolean
                modes[key] = value = "on" if value else "off"
            if value not in MODES:
                raise ArgumentError(key, repr(value), f"one of {', '.join(MODES)}", "auto")
        check_int("every_n_epochs", every_n_epochs, 1, "epochs between scores; ~callbacks.quality turns it off", 1)
        check_int("min_batches", min_batches, 0, "training batches between two scores", 100)
        check_int("num_samples", num_samples, 2, "generated images per score", 1000)
        self.every_n_epochs, self.min_batches = every_n_epochs, min_batches
        self.num_samples, self.reference = num_samples, reference
        self.modes = modes
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
        validate(self.protocols(labelled=True, inception=True, heldout=True), self.settings)

    def protocols(self, labelled: bool, inception: bool, heldout: bool) -> list[Protocol]:
        metrics = []
        if labelled and self.modes["classifier"] != "off":
            metrics += ["cfid", "coverage", "class_acc"]
        if inception and self.modes["inception"] != "off":
            metrics += ["fid", "kid", "is"]
        if labelled and heldout and self.modes["heldout"] != "off":
            metrics += ["hfid"]
        protocols = protocols_for(metrics, self.num_samples, self.reference)
        return [Protocol("hfid", p.num_samples, "test") if p.metric == "hfid" else p for p in protocols]

    def available(self, datamodule: L.LightningDataModule) -> list[Protocol]:
        """The protocols this callback will log for ``datamodule`` (raises for ``on`` without its input)."""
        name = getattr(datamodule, "name", type(datamodule).__name__)
        labelled = getattr(datamodule, "num_classes", None) is not None
        for key in ("classifier", "heldout"):
            if self.modes[key] == "on" and not labelled:
                raise ValueError(
                    f"callbacks.quality.{key}=on needs a data set with class labels; {name} has none. Use auto or off."
                )
        has_test = "test" in getattr(datamodule, "splits", ())
        if self.modes["heldout"] == "on" and not has_test:
            raise ValueError(f"callbacks.quality.heldout=on needs a test split; {name} has none. Use auto or off.")
        weights = inception_weights(self.inception_path)
        if self.modes["inception"] == "on" and weights is None:
            raise FileNotFoundError(missing_inception_message(self.inception_path))
        return self.protocols(labelled, weights is not None, has_test)

    def names(self, datamodule: L.LightningDataModule, conditional: bool = False) -> list[str]:
        """The ``val/*`` keys a run on ``datamodule`` logs (``class_acc`` only for a conditional G)."""
        return [f"val/{p.name}" for p in self.available(datamodule) if p.metric != "class_acc" or conditional]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check every prerequisite and size now, before any training."""
        self._started = time.perf_counter()
        protocols = self.available(trainer.datamodule)
        if protocols:
            check_data(trainer.datamodule, protocols)
        if self.modes["inception"] == "auto" and not any(p.extractor == "inception" for p in protocols):
            rank_zero_warn(f"FID/KID/IS are off for this run: {missing_inception_message(self.inception_path)}")
        conditional = bool(pl_module.hparams.get("num_classes"))
        shown = [f"val/{p.name}" for p in protocols if p.metric != "class_acc" or conditional]
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
