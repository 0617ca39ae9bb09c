"""Lightning glue: score samples every few epochs and log ``val/*`` for TensorBoard and the best checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from dcgan.data.base import DataError, to_unit_range
from dcgan.metrics.classifier import cached_classifier
from dcgan.metrics.quality import QualitySuite, inception_weights, missing_inception_message

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")


class QualityMetrics(L.Callback):
    """Every ``every_n_epochs``, ``num_samples`` images from G (its EMA when on) vs as many real ones.

    Skipped under ``fast_dev_run``.
    ``classifier``: the offline classifier FID ``val/cfid`` and ``val/class_coverage``, for data sets
    with labels (trained once on them, cached in ``cache_dir``). ``inception``: ``val/fid``,
    ``val/kid``, ``val/is`` with the Inception weights file at ``inception_weights`` (or
    ``$DCGAN_INCEPTION_WEIGHTS``). ``auto`` uses what is available and says once what is not;
    ``on`` makes a missing prerequisite an error. Samples use a fixed seed, so epochs compare.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 1000,
        batch_size: int = 500,
        classifier: str = "auto",
        classifier_steps: int = 1000,
        inception: str = "auto",
        inception_weights: str | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        for key, value in (("classifier", classifier), ("inception", inception)):
            if value not in MODES:
                raise ValueError(f"callbacks.quality.{key}={value!r}: expected one of {MODES}.")
        if every_n_epochs < 1 or num_samples < 2:
            raise ValueError(
                f"callbacks.quality: every_n_epochs={every_n_epochs} and num_samples={num_samples} must be "
                ">= 1 and >= 2; remove the callback (~callbacks.quality) to turn metrics off."
            )
        self.every_n_epochs, self.num_samples, self.batch_size = every_n_epochs, num_samples, batch_size
        self.classifier_mode, self.classifier_steps = classifier, classifier_steps
        self.inception_mode, self.inception_path = inception, inception_weights
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.seed = seed
        self.suite: QualitySuite | None = None

    def available(self, datamodule: L.LightningDataModule) -> list[str]:
        """The ``val/*`` keys this callback will log for ``datamodule`` (raises for ``on`` without its input)."""
        names = []
        labelled = getattr(datamodule, "num_classes", None) is not None
        if self.classifier_mode == "on" and not labelled:
            raise ValueError(
                f"callbacks.quality.classifier=on needs a data set with class labels; "
                f"{getattr(datamodule, 'name', type(datamodule).__name__)} has none. Use auto or off."
            )
        if self.classifier_mode != "off" and labelled:
            names += ["val/cfid", "val/class_coverage"]
        if self.inception_mode != "off":
            if inception_weights(self.inception_path) is not None:
                names += ["val/fid", "val/kid", "val/is"]
            elif self.inception_mode == "on":
                raise FileNotFoundError(missing_inception_message(self.inception_path))
        return names

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        names = self.available(trainer.datamodule)
        if self.inception_mode == "auto" and "val/fid" not in names:
            rank_zero_warn(f"FID/KID/IS are off for this run: {missing_inception_message(self.inception_path)}")

    def _real(self, datamodule: L.LightningDataModule) -> Iterator[torch.Tensor]:
        images = getattr(datamodule, "images", None)
        if images is None:  # files decoded by workers: draw from the training batches
            seen = 0
            for batch in datamodule.train_dataloader():
                yield to_unit_range(batch)
                seen += len(batch)
                if seen >= self.num_samples:
                    return
            return
        idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))[: self.num_samples]
        for chunk in idx.split(self.batch_size):
            yield to_unit_range(images[chunk])

    def fake_batches(self, pl_module: L.LightningModule) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """``num_samples`` images from the model's ``sample`` (EMA when on), from a fixed seed.

        A conditional model draws classes uniformly and yields (images, classes asked for).
        """
        gen = torch.Generator().manual_seed(self.seed)
        classes = getattr(pl_module.generator, "num_classes", None)
        for start in range(0, self.num_samples, self.batch_size):
            n = min(self.batch_size, self.num_samples - start)
            z = torch.randn(n, pl_module.generator.nz, generator=gen)
            if classes:
                labels = torch.randint(classes, (n,), generator=gen)
                yield pl_module.sample(z, labels), labels
            else:
                yield pl_module.sample(z)

    def build_suite(self, dm: L.LightningDataModule, device: torch.device) -> QualitySuite | None:
        """The metrics available for ``dm``, with its real features computed; None when there are none."""
        names = self.available(dm)
        if not names:
            return None
        classifier = None
        if "val/cfid" in names:
            try:
                labels = dm.load_labels()
            except DataError as err:
                if self.classifier_mode == "on":
                    raise
                rank_zero_warn(f"val/cfid and val/class_coverage are off for this run: {err}")
            else:
                classifier = cached_classifier(dm.images, labels, dm.num_classes, self.cache_dir, self.classifier_steps)
        weights = inception_weights(self.inception_path) if "val/fid" in names else None
        if classifier is None and weights is None:
            return None
        return QualitySuite(self._real(dm), classifier=classifier, inception=weights, device=device)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or trainer.sanity_checking or trainer.fast_dev_run:
            return  # fast_dev_run: a smoke test of the training hooks, like Lightning's own logging and checkpoints
        results = None
        if trainer.is_global_zero:  # one scorer (and one classifier cache writer); the other ranks wait for it
            if self.suite is None:
                self.suite = self.build_suite(trainer.datamodule, pl_module.device)
            results = self.suite.score(self.fake_batches(pl_module)) if self.suite is not None else None
        results = trainer.strategy.broadcast(results, src=0)
        if results is None:
            return
        for name, value in results.items():  # for ModelCheckpoint(monitor=...) and train()'s return value
            pl_module.log(name, value, on_step=False, on_epoch=True, logger=False, sync_dist=True)  # equal on all ranks
        for logger in trainer.loggers:  # at global_step, the x-axis of every other chart
            logger.log_metrics(results, step=trainer.global_step)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in results.items())
        rank_zero_info(f"epoch {trainer.current_epoch} (step {trainer.global_step}): {summary}")
