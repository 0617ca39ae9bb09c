"""Loggers that need more than Lightning's own: MLflow with the sample grids and a local file store."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from PIL import Image


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
