"""Classifiers trained on a data set's own labels: offline features for FIDs on digit-like data.

Inception-based FID needs weights this project cannot download; for digit-like data a classifier trained
on labelled images gives a fully offline domain metric (as in e.g. the MNIST FIDs of Lucic et al. 2018).
Two networks of different families serve two roles:

* ``DigitClassifier`` (3x3 convs, BatchNorm, max-pooling, 128-d) is trained on the **training** split and
  drives the training-time monitor (``cfid``) and the best checkpoint; recipes may be tuned on it.
* ``HeldOutClassifier`` (5x5 and strided convs, GroupNorm, GELU, 256-d) is trained only on the **test**
  split and scores against the test split (``hfid``): a scorer no recipe was tuned on, for claims.

Each is trained once per data set, split and settings and cached on disk.
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

from dcgan.progress import Progress

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


class HeldOutClassifier(nn.Module):
    """The held-out scorer: 5x5 convs, strided downsampling, GroupNorm and GELU, 256-d features.

    Deliberately another family than ``DigitClassifier`` (no BatchNorm, no max-pooling, larger receptive
    fields, a spatial 4x4 readout instead of global pooling), so that a recipe that learned to please one
    has no reason to please the other.
    """

    num_features = 256

    def __init__(self, channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 5, padding=2), nn.GELU(),
            nn.Conv2d(width, 2 * width, 5, stride=2, padding=2), nn.GroupNorm(8, 2 * width), nn.GELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * width), nn.GELU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),  # (B, 4*width*16)
            nn.Linear(64 * width, self.num_features), nn.GELU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.num_features, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {"digit": DigitClassifier, "heldout": HeldOutClassifier}
# batch size and peak learning rate per network (bench/monitoring_cost.py measured the digit classifier's)
TRAINING: dict[str, dict[str, float]] = {
    "digit": {"batch_size": 64, "lr": 2e-3},
    "heldout": {"batch_size": 128, "lr": 3e-3},
}


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
    steps: int = 800,
    batch_size: int | None = None,
    seed: int = 0,
    arch: str = "digit",
    lr: float | None = None,
    schedule: str = "onecycle",
) -> tuple[nn.Module, float]:
    """Train on 90% of (uint8 images, labels); return the model and its accuracy on the other 10%.

    Adam with a one-cycle schedule (warm-up to ``lr``, cosine down to 0; ``schedule="constant"``: ``lr`` all
    along) in channels_last. The digit classifier reaches in 800 steps of 64 the accuracy that 1,000 steps of
    128 at a constant 1e-3 gave, in a fraction of the time (bench/monitoring_cost.py measures both).
    """
    if schedule not in ("onecycle", "constant"):
        raise ValueError(f"schedule={schedule!r}: expected 'onecycle' or 'constant'.")
    batch_size = batch_size or int(TRAINING[arch]["batch_size"])
    lr = lr or TRAINING[arch]["lr"]
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=gen)
    n_test = max(1, len(images) // 10)
    test, train = order[:n_test], order[n_test:]
    with torch.random.fork_rng():  # initial weights and dropout from the seed; the caller's RNG untouched
        torch.manual_seed(seed)
        model = ARCHITECTURES[arch](images.size(1), num_classes).to(memory_format=torch.channels_last)
        _fit(model, images, labels, train, steps, batch_size, lr, schedule, gen)
    model.eval().to(memory_format=torch.contiguous_format)
    return model, accuracy(model, images[test], labels[test])


def _fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    train: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    schedule: str,
    gen: torch.Generator,
) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 2), pct_start=0.15)
    else:
        scheduler = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)
    model.train()
    with Progress(f"training the metric classifier ({type(model).__name__})", steps, unit="steps") as progress:
        for _ in range(steps):
            idx = train[torch.randint(len(train), (batch_size,), generator=gen)]
            x = augment(images[idx].float().div(127.5).sub(1), gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            scheduler.step()
            progress.advance()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on uint8 ``images``."""
    correct = sum(
        (model(chunk.float().div(127.5).sub(1)).argmax(1) == target).sum().item()
        for chunk, target in zip(images.split(1024), labels.split(1024), strict=True)
    )
    return correct / max(1, len(images))


def cached_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    cache_dir: Path | None,
    steps: int = 800,
    arch: str = "digit",
) -> nn.Module:
    """Load the classifier for exactly these images, labels and settings from ``cache_dir``, or train and store it."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"classifier arch={arch!r}: expected one of {sorted(ARCHITECTURES)}.")
    model = ARCHITECTURES[arch](images.size(1), num_classes)
    path = (
        cache_dir / f"classifier-{arch}-{classifier_key(images, labels, num_classes, steps, arch)}.pt"
        if cache_dir
        else None
    )
    if path is not None and path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    log.info("Training the %s metric classifier on %d labelled images (%d steps)...", arch, len(images), steps)
    model, held_out = train_classifier(images, labels, num_classes, steps=steps, arch=arch)
    log.info("Metric classifier (%s) accuracy on its 10%% hold-out: %.4f", arch, held_out)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: DDP ranks or sweep jobs may train it side by side
    return model


def classifier_key(images: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int, arch: str) -> str:
    """A digest of what the trained weights depend on: the data (a sample of pixels, every label) and settings."""
    digest = hashlib.sha1()
    recipe = [
        list(images.shape),
        num_classes,
        steps,
        arch,
        ARCHITECTURES[arch].num_features,
        "aug1",
        "onecycle",
        "seeded-dropout",
        TRAINING[arch],
    ]
    digest.update(json.dumps(recipe).encode())
    digest.update(images[:: max(1, len(images) // 512)].contiguous().numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    return digest.hexdigest()[:16]


def weights_digest(model: nn.Module) -> str:
    """A digest of a network's weights: part of every reference-statistics cache key."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
