"""Sample quality against real data: FID/KID/IS on Inception features and the offline classifier's FID and coverage.

All distances come from torchmetrics; this module only chooses the feature extractors, keeps the real
features (computed once), and feeds generated batches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from dcgan.metrics.classifier import ClassifierFeatures, DigitClassifier

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's port of the TF 2015-12-05 graph


def inception_weights(path: str | None) -> Path | None:
    """The Inception weights file from ``path`` or ``$DCGAN_INCEPTION_WEIGHTS``, if it exists."""
    candidate = path or os.environ.get("DCGAN_INCEPTION_WEIGHTS")
    return Path(candidate).expanduser() if candidate and Path(candidate).expanduser().is_file() else None


def missing_inception_message(path: str | None) -> str:
    where = path or os.environ.get("DCGAN_INCEPTION_WEIGHTS") or "(not set)"
    return (
        f"Inception weights not found at {where}. FID/KID/IS need torch-fidelity's {INCEPTION_FILE} "
        "(the TF 2015-12-05 Inception port that torchmetrics uses); download it on a machine with internet "
        "access (torch-fidelity's release assets), then set callbacks.quality.inception_weights=/path/to/it "
        "or DCGAN_INCEPTION_WEIGHTS."
    )


class InceptionFeatures(nn.Module):
    """Inception-v3 (FID protocol) on images in [-1, 1]; gray images are replicated to RGB."""

    def __init__(self, weights: Path, output: str) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[output], feature_extractor_weights_path=str(weights)
        )
        self.num_features = 2048 if output == "2048" else 1008

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.size(1) == 1 else x
        return self.net(((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))


def class_coverage(logits: torch.Tensor, num_classes: int) -> float:
    """exp(entropy of the predicted-class histogram) / classes: 1 when samples spread evenly, 1/K when one class."""
    counts = torch.bincount(logits.argmax(1), minlength=num_classes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    return math.exp(entropy) / num_classes


class QualitySuite:
    """Scores generated images against ``real`` (float [-1, 1]) with whichever extractors are given."""

    def __init__(
        self,
        real: Iterable[torch.Tensor],
        classifier: DigitClassifier | None = None,
        inception: Path | None = None,
        kid_subset_size: int = 1000,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        # sync_on_compute=False: one process scores (rank zero under DDP, see QualityMetrics); no collectives.
        self.metrics: dict[str, Metric] = {}
        self.classifier = ClassifierFeatures(classifier, logits=True).to(self.device) if classifier else None
        if classifier is not None:
            self.metrics["val/cfid"] = FrechetInceptionDistance(
                feature=ClassifierFeatures(classifier), reset_real_features=False, sync_on_compute=False
            )
        if inception is not None:
            features = InceptionFeatures(inception, "2048")
            self.metrics["val/fid"] = FrechetInceptionDistance(
                feature=features, reset_real_features=False, sync_on_compute=False
            )
            self.metrics["val/kid"] = KernelInceptionDistance(
                feature=features, subset_size=kid_subset_size, reset_real_features=False, sync_on_compute=False
            )
            self.metrics["val/is"] = InceptionScore(
                feature=InceptionFeatures(inception, "logits_unbiased"), sync_on_compute=False
            )
        for metric in self.metrics.values():
            metric.to(self.device)
        self.num_real = 0
        for batch in real:
            self.num_real += len(batch)
            for name, metric in self.metrics.items():
                if name != "val/is":
                    metric.update(batch.to(self.device), real=True)

    @property
    def names(self) -> list[str]:
        return [*self.metrics, *(["val/class_coverage"] if self.classifier else [])]

    @torch.no_grad()
    def score(self, fake: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Metrics of generated images (batches of float [-1, 1]) against the real features.

        Batches given as (images, labels), from a conditional G, also give ``val/class_acc``: how often
        the classifier sees the class that G was asked for.
        """
        logits, asked = [], []
        for batch in fake:
            if isinstance(batch, (tuple, list)):
                batch, labels = batch
                asked.append(labels.to(self.device))
            batch = batch.to(self.device)
            for name, metric in self.metrics.items():
                metric.update(batch) if name == "val/is" else metric.update(batch, real=False)
            if self.classifier is not None:
                logits.append(self.classifier(batch))
        results: dict[str, float] = {}
        for name, metric in self.metrics.items():
            value = metric.compute()
            results[name] = float(value[0] if isinstance(value, tuple) else value)  # KID/IS: (mean, std)
            metric.reset()  # real features stay (reset_real_features=False)
        if self.classifier is not None:
            results["val/class_coverage"] = class_coverage(torch.cat(logits), self.classifier.num_features)
            if asked:
                results["val/class_acc"] = (torch.cat(logits).argmax(1) == torch.cat(asked)).float().mean().item()
        return results
