"""Loggers that need more than Lightning's own: TensorBoard and CSV files that a full disk cannot turn into a crash,
MLflow with the sample grids and a local file store."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from PIL import Image

log = logging.getLogger("dcgan")


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind ``err`` (itself, its cause or its context), if any."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _WritesMayFail:
    """For file loggers: a write that fails (``OSError``: a full disk, a lost mount) is named once in the log and
    the logger writes nothing more; training goes on. The checkpoint save, which a full disk also stops, ends the
    run in one line with what to do (``dcgan.lightning.checkpoint_io.DiskFullError``)."""

    _write_failed = False

    def _guarded(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._write_failed:
            return None
        try:
            return write(*args, **kwargs)
        except Exception as err:  # Lightning re-raises the writer's OSError as a ValueError about the value
            cause = _os_error(err)
            if cause is None:
                raise
            self._write_failed = True
            log.warning("%s: its files in %s are not written from here on (%s).", type(self).__name__,
                        getattr(self, "log_dir", "?"), cause)  # fmt: skip
            return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._guarded(super().log_metrics, metrics, step)  # type: ignore[misc]

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        self._guarded(super().log_hyperparams, *args, **kwargs)  # type: ignore[misc]

    def save(self) -> None:
        self._guarded(super().save)  # type: ignore[misc]

    def finalize(self, status: str) -> None:
        self._guarded(super().finalize, status)  # type: ignore[misc]


class TensorBoardLogger(_WritesMayFail, LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger``; a failed event-file write is logged once, not raised into training."""


class CSVLogger(_WritesMayFail, LightningCSVLogger):
    """Lightning's ``CSVLogger``; a failed write of ``metrics.csv`` is logged once, not raised into training."""


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's ``MLFlowLogger`` plus :meth:`log_image`, which it lacks: each grid becomes an image artifact.

    MLflow 3 refuses its local file store (``file:...``) unless ``MLFLOW_ALLOW_FILE_STORE`` is set; it still
    works and needs no database, so a ``file:`` URI sets it (a value you exported is kept).
    """

    def __init__(self, *args: Any, tracking_uri: str | None = None, **kwargs: Any) -> None:
        if tracking_uri is None or tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        super().__init__(*args, tracking_uri=tracking_uri, **kwargs)

    def log_image(self, key: str, images: Sequence[torch.Tensor], step: int | None = None, **kwargs: Any) -> None:
        """``images``: (C, H, W) floats in [0, 1]; stored as ``<key>/step<N>.png`` (or ``<key>_<i>...``)."""
        for i, image in enumerate(images):
            array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
            name = key if len(images) == 1 else f"{key}_{i}"
            where = f"{name}/step{step:07d}.png" if step is not None else f"{name}.png"
            self.experiment.log_image(
                self.run_id, Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array), where
            )
