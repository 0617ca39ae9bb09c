"""A small CNN trained on the data set's own labels: offline features for a "classifier FID" and class coverage.

Inception-based FID needs weights this project cannot download; for digit-like data a classifier trained
on the labelled training split gives a fully offline domain metric (as in e.g. the MNIST FIDs of
Lucic et al. 2018). It is cached per data set and decode settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class DigitClassifier(nn.Module):
    """Three conv blocks and a 128-d feature layer; input float images in [-1, 1]."""

    num_features = 128

    def __init__(self, channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(channels, width), nn.MaxPool2d(2),
            *block(width, 2 * width), nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 4*width)
            nn.Linear(4 * width, self.num_features), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ClassifierFeatures(nn.Module):
    """Feature extractor for torchmetrics (``num_features`` skips its probing with a 299x299 input)."""

    def __init__(self, classifier: DigitClassifier, logits: bool = False) -> None:
        super().__init__()
        self.classifier, self.logits = classifier.eval(), logits
        self.num_features = classifier.head.out_features if logits else classifier.num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.classifier if self.logits else self.classifier.features)(x.float())


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Noise, brightness and shifts: generated images carry such artefacts, and a classifier trained only
    on clean digits maps them all to one class (seen: every 1-epoch MNIST sample called an 8)."""
    b = x.size(0)
    sigma = 0.4 * torch.rand(b, 1, 1, 1, generator=gen)
    x = x + sigma * torch.randn(x.shape, generator=gen) + 0.3 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3)).clamp(-1, 1)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    steps: int = 1000,
    batch_size: int = 128,
    seed: int = 0,
) -> tuple[DigitClassifier, float]:
    """Train on 90% of (uint8 images, labels); return the model and its accuracy on the held-out 10%."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=gen)
    n_test = max(1, len(images) // 10)
    test, train = order[:n_test], order[n_test:]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitClassifier(images.size(1), num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        idx = train[torch.randint(len(train), (batch_size,), generator=gen)]
        x = augment(images[idx].float().div(127.5).sub(1), gen)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(images[chunk].float().div(127.5).sub(1)).argmax(1) == labels[chunk]).sum().item()
            for chunk in test.split(1024)
        )
    return model, correct / n_test


def cached_classifier(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, cache_dir: Path | None, steps: int = 1000
) -> DigitClassifier:
    """Load the classifier for exactly these images and labels from ``cache_dir``, or train and store it."""
    digest = hashlib.sha1()
    digest.update(json.dumps([list(images.shape), num_classes, steps, DigitClassifier.num_features, "aug1"]).encode())
    digest.update(images[:: max(1, len(images) // 512)].contiguous().numpy().tobytes())  # a sample of pixels
    digest.update(labels.numpy().tobytes())
    path = cache_dir / f"classifier-{digest.hexdigest()[:16]}.pt" if cache_dir else None
    model = DigitClassifier(images.size(1), num_classes)
    if path is not None and path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    log.info("Training the offline metric classifier on %d labelled images (%d steps)...", len(images), steps)
    model, accuracy = train_classifier(images, labels, num_classes, steps=steps)
    log.info("Metric classifier held-out accuracy: %.4f", accuracy)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: DDP ranks may train it side by side
    return model
