"""Callbacks that tests add to real ``train.py`` runs (``+callbacks.probe._target_=tests.probes.RankProbe``).

They run in every process of a run, DDP ranks and launcher workers included, and write what they saw
to ``out`` so that a test can compare processes it did not start itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class RankProbe(L.Callback):
    """Per rank: a checksum of each batch, of each step's noise, the first global_step, G's final weights (parameters:
    without SyncBatchNorm each rank keeps its own BatchNorm running statistics)."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.record: dict[str, Any] = {"batches": [], "noise": [], "first_step": None}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["start"] = time.time()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.record["first_step"] is None:
            self.record["first_step"] = trainer.global_step
        images = batch[0] if isinstance(batch, (tuple, list)) else batch  # (images, labels) when conditional
        self.record["batches"].append(float(images.double().sum()))
        self.record["noise"].append(float(pl_module.noise(len(images)).double().sum()))

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        rank = trainer.global_rank
        self.record.update(
            rank=rank,
            world_size=trainer.world_size,
            end=time.time(),
            global_step=trainer.global_step,
            threads=torch.get_num_threads(),
        )
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{rank}.json").write_text(json.dumps(self.record))
        for net, name in ((pl_module.generator, "g"), (pl_module.discriminator, "d")):
            weights = {k: v.detach().cpu() for k, v in net.named_parameters()}
            torch.save(weights, self.out / f"rank{rank}_{name}.pt")
